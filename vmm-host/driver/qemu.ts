// The QEMU microvm driver: the exact command line of docs/guest.md, qemu daemonized (-daemonize
// -pidfile) and virtiofsd detached in its own session, so both outlive the process that started
// them (coved can restart and re-attach by pid file).
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { IMAGE, VM } from '../../contract/layout';
import { GUEST } from '../../contract/guest';
import type { Accel } from './accel';
import type { Driver, DriverFeatures, StopOptions, VmPids } from './driver';
import { DriverError, waitFor } from './errors';
import { qmpQuit } from './qmp';
import { MissingToolError } from '../image/errors';
import { findPasst, findQemu, findVirtiofsd, requireVirtiofsd } from './tools';

export interface MountSpec {
  type: 'virtiofs' | '9p';
  hostPath: string;
  readonly: boolean;
}

export interface QemuSpec {
  /** images/<tier>-<hash>/ */
  imageDir: string;
  /** vms/<name>/ (holds disk.qcow2 and cfg.raw already). */
  vmDir: string;
  cpus: number;
  memoryMiB: number;
  accel: Accel;
  /** Host TSC kHz for `tsc_early_khz` under TCG; omitted when null. */
  tscKhz?: number | null;
  mount: MountSpec | null;
  kernelArgsExtra?: string[];
  /**
   * `passt` (default where installed): the guest reaches the network but not the host's
   * loopback. `user`: qemu's slirp, which maps the gateway address to the host's 127.0.0.1.
   */
  network?: 'passt' | 'user';
}

export interface QemuPaths {
  qemu: string;
}

export const BASE_KERNEL_ARGS = ['console=ttyS0', 'reboot=k', 'panic=-1', 'quiet', 'loglevel=4'];

export function kernelCmdline(spec: Pick<QemuSpec, 'accel' | 'tscKhz' | 'kernelArgsExtra'>): string {
  const args = [...BASE_KERNEL_ARGS];
  if (spec.accel === 'tcg') {
    // Without these, half the TCG boots stall calibrating the TSC (GUEST-NOTES.md).
    if (spec.tscKhz) args.push(`tsc_early_khz=${spec.tscKhz}`);
    args.push('tsc=reliable');
  }
  args.push(...(spec.kernelArgsExtra ?? []));
  return args.join(' ');
}

/** qemu's argv (without the program) for a spec; pure, so tests can check it line by line. */
export function buildQemuArgv(spec: QemuSpec): string[] {
  const vm = (f: keyof typeof VM) => path.join(path.resolve(spec.vmDir), VM[f]);
  const img = (f: keyof typeof IMAGE) => path.join(path.resolve(spec.imageDir), IMAGE[f]);
  const virtiofs = spec.mount?.type === 'virtiofs';
  const machine = `microvm,pit=on,pic=on,rtc=on${virtiofs ? ',memory-backend=mem' : ''}`;
  const a: string[] = ['-M', machine];
  // Under multi-threaded TCG a vCPU can run a stale translation of kernel text that another vCPU
  // is live-patching (static keys, text_poke_bp), and the guest panics on an unexpected int3 —
  // seen here as "Oops: int3" in runc, then qemu gone. One TCG thread keeps translations coherent.
  a.push(...(spec.accel === 'kvm' ? ['-accel', 'kvm', '-cpu', 'host'] : ['-accel', 'tcg,thread=single', '-cpu', 'max']));
  a.push('-m', `${spec.memoryMiB}`, '-smp', `${spec.cpus}`);
  a.push('-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot');
  a.push('-global', 'virtio-mmio.force-legacy=false');
  a.push('-kernel', img('kernel'), '-initrd', img('initrd'), '-append', kernelCmdline(spec));
  a.push('-chardev', `file,id=con,path=${vm('consoleLog')}`, '-serial', 'chardev:con');
  a.push('-drive', `id=root,file=${vm('disk')},format=qcow2,if=none,cache=writeback,discard=unmap`);
  a.push('-device', 'virtio-blk-device,drive=root');
  a.push('-drive', `id=cfg,file=${vm('configDisk')},format=raw,if=none,readonly=on`);
  a.push('-device', 'virtio-blk-device,drive=cfg');
  a.push('-device', 'virtio-serial-device');
  a.push('-chardev', `socket,id=agent,path=${vm('agentSock')},server=on,wait=off`);
  a.push('-device', `virtserialport,chardev=agent,name=${GUEST.agentPortName}`);
  if (spec.network === 'passt') a.push('-netdev', `stream,id=net0,server=off,addr.type=unix,addr.path=${vm('netSock')}`);
  else a.push('-netdev', 'user,id=net0');
  a.push('-device', 'virtio-net-device,netdev=net0');
  a.push('-device', 'virtio-rng-device');
  if (spec.mount && virtiofs) {
    a.push('-object', `memory-backend-memfd,id=mem,size=${spec.memoryMiB}M,share=on`);
    a.push('-chardev', `socket,id=vfs,path=${vm('virtiofsSock')}`);
    a.push('-device', `vhost-user-fs-device,chardev=vfs,tag=${GUEST.workspaceTag}`);
  } else if (spec.mount) {
    const ro = spec.mount.readonly ? ',readonly=on' : '';
    a.push('-fsdev', `local,id=ws,path=${path.resolve(spec.mount.hostPath)},security_model=none${ro}`);
    a.push('-device', `virtio-9p-device,fsdev=ws,mount_tag=${GUEST.workspaceTag}`);
  }
  a.push('-qmp', `unix:${vm('qmpSock')},server=on,wait=off`);
  a.push('-pidfile', vm('qemuPid'), '-daemonize');
  return a;
}

/** virtiofsd's argv (without the program) for a spec with a virtio-fs mount. */
export function buildVirtiofsdArgv(spec: QemuSpec): string[] {
  if (!spec.mount || spec.mount.type !== 'virtiofs') throw new Error('virtiofsd is only for virtio-fs mounts');
  return [
    `--socket-path=${path.join(path.resolve(spec.vmDir), VM.virtiofsSock)}`,
    '-o', `source=${path.resolve(spec.mount.hostPath)}`,
    '-o', 'cache=auto',
    '-f',
  ];
}

export function readPid(file: string): number | null {
  try {
    const pid = Number.parseInt(fs.readFileSync(file, 'utf8').trim(), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

export function isRunning(pid: number | null): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A zombie (our own child not yet reaped) is not running.
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return true;
  }
}

function tail(file: string, n = 5): string {
  try {
    return fs.readFileSync(file, 'utf8').trim().split('\n').slice(-n).join(' | ');
  } catch {
    return '';
  }
}

/** passt's argv: the guest's static address, DNS forwarded to the host's resolver, no gateway-to-host mapping. */
export function buildPasstArgv(spec: QemuSpec): string[] {
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  return [
    '--foreground', '--quiet', '--ipv4-only',
    // Stay this user: as root passt would switch to nobody before binding in a 0700 folder.
    '--runas', `${uid}:${gid}`,
    '--socket', path.join(path.resolve(spec.vmDir), VM.netSock),
    '--address', '10.0.2.15', '--netmask', '24', '--gateway', '10.0.2.2',
    // Queries to 10.0.2.3 go to the host's own resolver (passt reads /etc/resolv.conf).
    '--dns-forward', '10.0.2.3',
    '--no-map-gw', '--tcp-ports', 'none', '--udp-ports', 'none',
  ];
}

/**
 * Spawns in its own session (setsid: it outlives the node process) with umask 077, so the sockets,
 * pid files and logs it creates are the user's alone whoever calls the driver.
 */
function spawnPrivate(bin: string, args: string[], logFd: number) {
  const old = process.umask(0o077);
  try {
    return spawn(bin, args, { detached: true, stdio: ['ignore', logFd, logFd] });
  } finally {
    process.umask(old);
  }
}

/**
 * Starts a helper process (virtiofsd, passt) in its own session, so it survives the node process,
 * records its pid, and waits for its socket.
 */
async function startHelper(name: string, bin: string, args: string[], sock: string, pidFile: string, logFile: string, hint: string): Promise<number> {
  fs.rmSync(sock, { force: true });
  const log = fs.openSync(logFile, 'a');
  const child = spawnPrivate(bin, args, log);
  fs.closeSync(log);
  const pid = child.pid;
  if (!pid) throw new DriverError(`cannot start ${bin}`, `check that ${name} is executable`);
  let exitCode: number | null = null;
  child.on('exit', (code) => (exitCode = code ?? -1));
  child.unref();
  fs.writeFileSync(pidFile, `${pid}\n`);
  await waitFor(`${name}'s socket ${sock}`, 10_000, () => {
    if (exitCode !== null) throw new DriverError(`${name} exited (${exitCode}) before listening: ${tail(logFile)}`, `see ${logFile}; ${hint}`);
    return fs.existsSync(sock);
  });
  fs.chmodSync(sock, 0o600);
  return pid;
}

function startVirtiofsd(spec: QemuSpec, env: NodeJS.ProcessEnv): Promise<number> {
  const f = (k: keyof typeof VM) => path.join(spec.vmDir, VM[k]);
  return startHelper('virtiofsd', requireVirtiofsd(env), buildVirtiofsdArgv(spec), f('virtiofsSock'), f('virtiofsdPid'), f('virtiofsdLog'), 'or use the 9p mount');
}

function startPasst(spec: QemuSpec, env: NodeJS.ProcessEnv): Promise<number> {
  const bin = findPasst(env);
  if (!bin) throw new MissingToolError('passt', 'passt');
  const f = (k: keyof typeof VM) => path.join(spec.vmDir, VM[k]);
  return startHelper('passt', bin, buildPasstArgv(spec), f('netSock'), f('passtPid'), f('passtLog'), 'or set COVE_NETWORK=user');
}

export interface StartOptions {
  env?: NodeJS.ProcessEnv;
  /** Deadline for qemu to daemonize (it checks the whole command line first). */
  timeoutMs?: number;
}

export async function startQemu(spec: QemuSpec, opts: StartOptions = {}): Promise<VmPids> {
  const env = opts.env ?? process.env;
  const qemu = findQemu(env);
  for (const f of [VM.qemuPid, VM.qmpSock, VM.agentSock, VM.consoleLog]) fs.rmSync(path.join(spec.vmDir, f), { force: true });
  let virtiofsd: number | null = null;
  let passt: number | null = null;
  if (spec.network === 'passt') passt = await startPasst(spec, env);
  if (spec.mount?.type === 'virtiofs') virtiofsd = await startVirtiofsd(spec, env).catch((e) => {
    if (passt) killQuietly(passt, 'SIGKILL');
    throw e;
  });
  const logFile = path.join(spec.vmDir, VM.qemuLog);
  const log = fs.openSync(logFile, 'a');
  fs.writeSync(log, `\n# ${new Date().toISOString()} ${qemu} ${buildQemuArgv(spec).join(' ')}\n`);
  try {
    const child = spawnPrivate(qemu, buildQemuArgv(spec), log);
    const timeoutMs = opts.timeoutMs ?? 30_000;
    // With -daemonize the first process exits once the VM is set up: 0 = started, else failed.
    const code = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new DriverError(`qemu did not daemonize within ${timeoutMs / 1000} s`, `see ${logFile}`));
      }, timeoutMs);
      child.on('error', (e) => {
        clearTimeout(timer);
        reject(new DriverError(`cannot run ${qemu}: ${e.message}`, 'install qemu-system-x86', { cause: e }));
      });
      child.on('exit', (c) => {
        clearTimeout(timer);
        resolve(c ?? -1);
      });
    });
    if (code !== 0) throw new DriverError(`qemu failed to start (exit ${code}): ${tail(logFile, 3)}`, `see ${logFile}`);
  } catch (e) {
    if (virtiofsd) killQuietly(virtiofsd, 'SIGKILL');
    if (passt) killQuietly(passt, 'SIGKILL');
    throw e;
  } finally {
    fs.closeSync(log);
  }
  const qemuPid = await waitFor(`qemu's pid file ${VM.qemuPid}`, 5000, () => readPid(path.join(spec.vmDir, VM.qemuPid)));
  // qemu's -daemonize sets its own umask (027): make its sockets the user's alone again.
  for (const f of [VM.agentSock, VM.qmpSock]) {
    try {
      fs.chmodSync(path.join(spec.vmDir, f), 0o600);
    } catch {
      // Not there: qemu reports its own failure.
    }
  }
  return { qemu: qemuPid, virtiofsd, passt };
}

function killQuietly(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // Already gone.
  }
}

/**
 * Stops the VM's processes: QMP quit, then SIGTERM, then SIGKILL, each with a deadline; then
 * virtiofsd. Safe to call on a stopped VM. (A clean guest shutdown is /usr/sbin/cove-poweroff over
 * SSH first; this is the fallback.)
 */
export async function stopQemu(vmDir: string, opts: StopOptions = {}): Promise<void> {
  const qemuPid = readPid(path.join(vmDir, VM.qemuPid));
  const gone = (pid: number | null) => !isRunning(pid);
  if (qemuPid && isRunning(qemuPid)) {
    await qmpQuit(path.join(vmDir, VM.qmpSock), opts.qmpTimeoutMs ?? 5000).catch(() => undefined);
    const waitGone = async (ms: number) => {
      const end = Date.now() + ms;
      while (Date.now() < end && !gone(qemuPid)) await new Promise((r) => setTimeout(r, 100));
      return gone(qemuPid);
    };
    if (!(await waitGone(opts.timeoutMs ?? 10_000))) {
      killQuietly(qemuPid, 'SIGTERM');
      if (!(await waitGone(5000))) {
        killQuietly(qemuPid, 'SIGKILL');
        await waitGone(5000);
      }
    }
  }
  for (const pidFile of [VM.virtiofsdPid, VM.passtPid]) {
    const helper = readPid(path.join(vmDir, pidFile));
    if (helper && isRunning(helper)) {
      killQuietly(helper, 'SIGTERM');
      const end = Date.now() + 5000;
      while (Date.now() < end && isRunning(helper)) await new Promise((r) => setTimeout(r, 100));
      if (isRunning(helper)) killQuietly(helper, 'SIGKILL');
    }
  }
  for (const f of [VM.qemuPid, VM.virtiofsdPid, VM.passtPid, VM.qmpSock, VM.agentSock, VM.virtiofsSock, VM.netSock]) fs.rmSync(path.join(vmDir, f), { force: true });
}

export class QemuDriver implements Driver {
  readonly features: DriverFeatures;
  constructor(
    accel: Accel,
    private readonly env: NodeJS.ProcessEnv = process.env,
  ) {
    this.features = {
      name: 'qemu-microvm',
      accel,
      vsock: fs.existsSync('/dev/vhost-vsock'),
      virtiofs: findVirtiofsd(env) !== null,
      '9p': true,
    };
  }
  start(spec: QemuSpec): Promise<VmPids> {
    return startQemu({ ...spec, accel: spec.accel ?? this.features.accel }, { env: this.env });
  }
  stop(vmDir: string, opts?: StopOptions): Promise<void> {
    return stopQemu(vmDir, opts);
  }
  isRunning(pid: number | null): boolean {
    return isRunning(pid);
  }
}
