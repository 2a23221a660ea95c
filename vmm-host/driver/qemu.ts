// The QEMU microvm driver: the command line of docs/guest.md, qemu daemonized (-daemonize
// -pidfile) and its helpers (virtiofsd, passt) detached in their own sessions, so all of them
// outlive the process that started them (coved can restart and re-attach by pid file). Saving and
// restoring a VM is QMP migration to and from a file (snapshot.ts).
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GUEST, GUEST_FORWARD_NIC, GUEST_NETWORK } from '../../contract/guest';
import { VM } from '../../contract/layout';
import type { Accel } from '../../contract/protocol';
import type { Driver, DriverFeatures, RestoreOptions, SaveOptions, SaveResult, StopOptions, VmPids, VmSpec } from './driver';
import { waitFor } from '../../contract/wait';
import { DriverError } from './errors';
import { MissingToolError } from '../image/errors';
import { createOverlay } from './overlay';
import { processAlive, readPid, signal, vmProcessesIn, waitGone } from './proc';
import { qmpCommand, qmpQuit } from './qmp';
import { qemuFeatures, toolVersion } from './qemu-features';
import { loadState, saveState, saveBlockers } from './snapshot';
import { findPasst, findQemu, requireVirtiofsd } from './tools';
import { DEFAULT_TCG_CACHE_MIB, tcgCacheMiB } from './tcg-cache';

/**
 * `oops=panic` with `panic=-1` and qemu's `-no-reboot`: any kernel oops ends the VM at once, so the
 * sandbox shows as crashed with the kernel's reason (coved/guest-crash.ts) instead of living on with
 * an agent and a dockerd that no longer answer.
 */
export const BASE_KERNEL_ARGS = ['console=ttyS0', 'reboot=k', 'panic=-1', 'oops=panic', 'quiet', 'loglevel=4'];

export function kernelCmdline(spec: Pick<VmSpec, 'accel' | 'tscKhz' | 'kernelArgsExtra'>): string {
  const args = [...BASE_KERNEL_ARGS];
  if (spec.accel === 'tcg') {
    // Without these, half the TCG boots stall calibrating the TSC (GUEST-NOTES.md).
    if (spec.tscKhz) args.push(`tsc_early_khz=${spec.tscKhz}`);
    args.push('tsc=reliable');
  }
  args.push(...(spec.kernelArgsExtra ?? []));
  return args.join(' ');
}

/**
 * The machine, accelerator, memory and CPUs: the part of the command line that the KVM probe
 * shares with every VM. `memoryBackend` names a `-object` the caller adds (guest RAM in a file or
 * a shared memfd). `tcgCacheMiB` bounds the TCG translation cache (null: QEMU's default, 1 GiB).
 */
export function machineArgs(accel: Accel, cpus: number, memoryMiB: number, memoryBackend: string | null, tcgCacheMiB: number | null = null): string[] {
  const machine = `microvm,pit=on,pic=on,rtc=on${memoryBackend ? `,memory-backend=${memoryBackend}` : ''}`;
  // Under multi-threaded TCG a vCPU can run a stale translation of kernel text that another vCPU
  // is live-patching (static keys, text_poke_bp), and the guest panics on an unexpected int3 —
  // seen here as "Oops: int3" in runc, then qemu gone. One TCG thread keeps translations coherent.
  const acc = accel === 'kvm' ? ['-accel', 'kvm', '-cpu', 'host'] : ['-accel', `tcg,thread=single${tcgCacheMiB ? `,tb-size=${tcgCacheMiB}` : ''}`, '-cpu', 'max'];
  return ['-M', machine, ...acc, '-m', `${memoryMiB}`, '-smp', `${cpus}`, '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot'];
}

/** The netdev id of the forwarding NIC. */
export const FORWARD_NETDEV = 'fwd';

/** The HMP commands that add and remove a forward on the forwarding NIC (QMP has none for slirp). */
export function hostfwdCommand(action: 'add', hostPort: number, guestPort: number): string;
export function hostfwdCommand(action: 'remove', hostPort: number): string;
export function hostfwdCommand(action: 'add' | 'remove', hostPort: number, guestPort?: number): string {
  for (const p of [hostPort, guestPort ?? 1]) {
    if (!Number.isInteger(p) || p < 1 || p > 65535) throw new DriverError(`not a TCP port: ${p}`, 'ports are whole numbers from 1 to 65535');
  }
  return action === 'add'
    ? `hostfwd_add ${FORWARD_NETDEV} tcp:127.0.0.1:${hostPort}-${GUEST_FORWARD_NIC.address}:${guestPort}`
    : `hostfwd_remove ${FORWARD_NETDEV} tcp:127.0.0.1:${hostPort}`;
}

/** A path as a QEMU option value: commas are doubled, as QEMU's option parser wants. */
function optPath(p: string): string {
  return path.resolve(p).replace(/,/g, ',,');
}

/**
 * qemu's argv (without the program) for a spec; pure, so tests can check it line by line. With
 * `incoming` the VM waits for a saved state (QMP `migrate-incoming`) instead of booting. A restore
 * uses the argv of the save with new paths: the device order must not change.
 */
export function buildQemuArgv(spec: VmSpec, opts: { incoming?: boolean } = {}): string[] {
  const vm = (f: keyof typeof VM) => optPath(path.join(spec.dir, VM[f]));
  const virtiofs = spec.share?.type === 'virtiofs';
  if (virtiofs && spec.memoryFile && !spec.memoryFile.shared) {
    throw new DriverError('virtio-fs needs guest RAM that the host can share, not a private copy of a memory file', 'use a 9p share for a VM restored from a template');
  }
  const backend = virtiofs || spec.memoryFile ? 'mem' : null;
  if (spec.balloon && spec.memoryFile && !spec.memoryFile.shared) {
    throw new DriverError('a balloon would punch holes in the RAM file that this VM maps copy-on-write, and so in every other VM that maps it', 'leave the balloon out of VMs restored from a template');
  }
  const a: string[] = machineArgs(spec.accel, spec.cpus, spec.memoryMiB, backend, spec.tcgCacheMiB === undefined ? DEFAULT_TCG_CACHE_MIB : spec.tcgCacheMiB);
  if (spec.memoryFile) {
    a.push('-object', `memory-backend-file,id=mem,size=${spec.memoryMiB}M,mem-path=${optPath(spec.memoryFile.path)},share=${spec.memoryFile.shared ? 'on' : 'off'}`);
  } else if (virtiofs) {
    a.push('-object', `memory-backend-memfd,id=mem,size=${spec.memoryMiB}M,share=on`);
  }
  a.push('-global', 'virtio-mmio.force-legacy=false');
  a.push('-kernel', path.resolve(spec.kernel), '-initrd', path.resolve(spec.initrd), '-append', kernelCmdline(spec));
  // append=on: a restored VM's console continues the log it had (or its template's), instead of
  // starting an empty one.
  a.push('-chardev', `file,id=con,path=${vm('consoleLog')},append=on`, '-serial', 'chardev:con');
  a.push('-drive', `id=root,file=${optPath(spec.disk)},format=qcow2,if=none,cache=writeback,discard=unmap`);
  a.push('-device', 'virtio-blk-device,drive=root');
  a.push('-drive', `id=cfg,file=${optPath(spec.configDisk)},format=raw,if=none,readonly=on`);
  a.push('-device', 'virtio-blk-device,drive=cfg');
  a.push('-device', 'virtio-serial-device');
  a.push('-chardev', `socket,id=agent,path=${vm('agentSock')},server=on,wait=off`);
  a.push('-device', `virtserialport,chardev=agent,name=${GUEST.agentPortName}`);
  if (spec.dataPort) {
    a.push('-chardev', `socket,id=data,path=${vm('dataSock')},server=on,wait=off`);
    a.push('-device', `virtserialport,chardev=data,name=${GUEST.dataPortName}`);
  }
  if (spec.stdinPort) {
    a.push('-chardev', `socket,id=stdin,path=${vm('stdinSock')},server=on,wait=off`);
    a.push('-device', `virtserialport,chardev=stdin,name=${GUEST.stdinPortName}`);
  }
  if (spec.network === 'passt') a.push('-netdev', `stream,id=net0,server=off,addr.type=unix,addr.path=${vm('netSock')}`);
  else a.push('-netdev', 'user,id=net0');
  a.push('-device', 'virtio-net-device,netdev=net0');
  if (spec.forwardNic) {
    // Only for connections the host opens (hostfwd, added at run time by forwardPort): restrict=on
    // lets the guest send nothing through slirp, and no IPv6, DHCP or DNS is offered on it.
    const n = GUEST_FORWARD_NIC;
    a.push('-netdev', `user,id=${FORWARD_NETDEV},restrict=on,ipv6=off,net=${n.net},host=${n.host}`);
    a.push('-device', `virtio-net-device,netdev=${FORWARD_NETDEV},mac=${n.mac}`);
  }
  a.push('-device', 'virtio-rng-device');
  if (spec.balloon) a.push('-device', 'virtio-balloon-device,free-page-reporting=on');
  if (spec.share && virtiofs) {
    a.push('-chardev', `socket,id=vfs,path=${vm('virtiofsSock')}`);
    a.push('-device', `vhost-user-fs-device,chardev=vfs,tag=${GUEST.workspaceTag}`);
  } else if (spec.share) {
    const ro = spec.share.readonly ? ',readonly=on' : '';
    a.push('-fsdev', `local,id=ws,path=${optPath(spec.share.hostPath)},security_model=none${ro}`);
    a.push('-device', `virtio-9p-device,fsdev=ws,mount_tag=${GUEST.workspaceTag}`);
  }
  (spec.extraShares ?? []).forEach((s, i) => {
    a.push('-fsdev', `local,id=m${i},path=${optPath(s.hostPath)},security_model=none${s.readonly ? ',readonly=on' : ''}`);
    a.push('-device', `virtio-9p-device,fsdev=m${i},mount_tag=${GUEST.extraMountTagPrefix}${i}`);
  });
  a.push('-qmp', `unix:${vm('qmpSock')},server=on,wait=off`);
  if (opts.incoming) a.push('-incoming', 'defer');
  a.push('-pidfile', vm('qemuPid'), '-daemonize');
  return a;
}

/**
 * virtiofsd's cache mode: `auto` gives the guest 1 s entry and attribute timeouts and keeps a
 * file's pages only while its mtime is unchanged, so a host edit shows within about a second;
 * `always` keeps entries, attributes and pages for a day, and `-o writeback` lets the guest trust
 * its own sizes and times over the host's. Measured in docs/workspace-fs.md.
 */
export const VIRTIOFSD_CACHE = 'auto';

/** virtiofsd's argv (without the program) for a spec with a virtio-fs share. */
export function buildVirtiofsdArgv(spec: VmSpec): string[] {
  if (!spec.share || spec.share.type !== 'virtiofs') throw new Error('virtiofsd is only for virtio-fs shares');
  return [`--socket-path=${path.join(path.resolve(spec.dir), VM.virtiofsSock)}`, '-o', `source=${path.resolve(spec.share.hostPath)}`, '-o', `cache=${VIRTIOFSD_CACHE}`, '-f'];
}

/** passt's argv: the guest's static address, DNS forwarded to the host's resolver, no gateway-to-host mapping. */
export function buildPasstArgv(spec: VmSpec): string[] {
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  return [
    '--foreground', '--quiet', '--ipv4-only',
    // Stay this user: as root passt would switch to nobody before binding in a 0700 folder.
    '--runas', `${uid}:${gid}`,
    '--socket', path.join(path.resolve(spec.dir), VM.netSock),
    '--address', GUEST_NETWORK.address, '--netmask', String(GUEST_NETWORK.prefixLength), '--gateway', GUEST_NETWORK.gateway,
    // Queries to the guest's DNS address go to the host's own resolver (passt reads /etc/resolv.conf).
    '--dns-forward', GUEST_NETWORK.dns,
    '--no-map-gw', '--tcp-ports', 'none', '--udp-ports', 'none',
  ];
}

/** The last lines a program wrote to its log, without the command lines the driver writes there. */
function tail(file: string, n = 5): string {
  try {
    return fs.readFileSync(file, 'utf8').trim().split('\n').filter((l) => l.trim() !== '' && !l.startsWith('# ')).slice(-n).join(' | ');
  } catch {
    return '';
  }
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

/** Starts a helper (virtiofsd, passt) in its own session, records its pid, and waits for its socket. */
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
  }, { intervalMs: 50, onError: 'throw', hint: `see ${logFile}` });
  fs.chmodSync(sock, 0o600);
  return pid;
}

async function startHelpers(spec: VmSpec, env: NodeJS.ProcessEnv): Promise<{ passt: number | null; virtiofsd: number | null }> {
  const f = (k: keyof typeof VM) => path.join(spec.dir, VM[k]);
  let passt: number | null = null;
  if (spec.network === 'passt') {
    const bin = findPasst(env);
    if (!bin) throw new MissingToolError('passt', 'passt');
    passt = await startHelper('passt', bin, buildPasstArgv(spec), f('netSock'), f('passtPid'), f('passtLog'), 'or set COVE_NETWORK=user');
  }
  let virtiofsd: number | null = null;
  if (spec.share?.type === 'virtiofs') {
    try {
      virtiofsd = await startHelper('virtiofsd', requireVirtiofsd(env), buildVirtiofsdArgv(spec), f('virtiofsSock'), f('virtiofsdPid'), f('virtiofsdLog'), 'or use the 9p mount');
    } catch (e) {
      signal(passt, 'SIGKILL', path.resolve(spec.dir));
      throw e;
    }
  }
  return { passt, virtiofsd };
}

/** Runs qemu with -daemonize: the first process exits once the VM is set up (0 = started). */
async function runQemu(spec: VmSpec, argv: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<number> {
  const qemu = findQemu(env);
  const logFile = path.join(spec.dir, VM.qemuLog);
  const log = fs.openSync(logFile, 'a');
  fs.writeSync(log, `\n# ${new Date().toISOString()} ${qemu} ${argv.join(' ')}\n`);
  try {
    const child = spawnPrivate(qemu, argv, log);
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
  } finally {
    fs.closeSync(log);
  }
  const pid = await waitFor(`qemu's pid file ${VM.qemuPid}`, 5000, () => readPid(path.join(spec.dir, VM.qemuPid)), 50);
  // qemu's -daemonize sets its own umask (027): make its sockets the user's alone again.
  for (const f of [VM.agentSock, VM.dataSock, VM.stdinSock, VM.qmpSock]) {
    try {
      fs.chmodSync(path.join(spec.dir, f), 0o600);
    } catch {
      // Not there: qemu reports its own failure.
    }
  }
  return pid;
}

export interface QemuDriverOptions {
  env?: NodeJS.ProcessEnv;
  /** Deadline for qemu to daemonize (it checks the whole command line first). */
  daemonizeTimeoutMs?: number;
}

export class QemuDriver implements Driver {
  readonly features: DriverFeatures;
  private readonly env: NodeJS.ProcessEnv;
  private readonly daemonizeTimeoutMs: number;

  constructor(accel: Accel, opts: QemuDriverOptions = {}) {
    this.env = opts.env ?? process.env;
    this.daemonizeTimeoutMs = opts.daemonizeTimeoutMs ?? 30_000;
    this.features = qemuFeatures(accel, this.env);
  }

  async create(spec: VmSpec, base: { file: string; format: 'raw' | 'qcow2' }, sizeBytes: number): Promise<{ created: boolean }> {
    return createOverlay(base.file, spec.disk, sizeBytes, base.format);
  }

  pids(dir: string): { qemu: number | null; virtiofsd: number | null; passt: number | null } {
    const live = (f: string) => {
      const pid = readPid(path.join(dir, f));
      return processAlive(pid, path.resolve(dir)) ? pid : null;
    };
    return { qemu: live(VM.qemuPid), virtiofsd: live(VM.virtiofsdPid), passt: live(VM.passtPid) };
  }

  async start(spec: VmSpec): Promise<VmPids> {
    const running = this.pids(spec.dir);
    if (running.qemu) return { qemu: running.qemu, virtiofsd: running.virtiofsd, passt: running.passt };
    return this.launch(spec, buildQemuArgv(this.sized(spec)), false);
  }

  /** The spec with this driver's translation cache size (COVE_TCG_TB_MIB, else this QEMU's default) unless it names one. */
  private sized(spec: VmSpec): VmSpec {
    if (spec.tcgCacheMiB !== undefined || spec.accel !== 'tcg') return spec;
    let version = '';
    try {
      version = toolVersion(findQemu(this.env));
    } catch {
      // No qemu: the launch reports it with the package to install.
    }
    return { ...spec, tcgCacheMiB: tcgCacheMiB(this.env, version) };
  }

  private async launch(spec: VmSpec, argv: string[], restoring: boolean): Promise<VmPids> {
    // Leftovers of an earlier run; the helpers of a dead VM are ended first. A boot starts a new
    // console log; a restore appends to the one there is.
    await this.stopHelpers(spec.dir);
    for (const f of [VM.qemuPid, VM.qmpSock, VM.agentSock, VM.dataSock, VM.stdinSock, ...(restoring ? [] : [VM.consoleLog])]) fs.rmSync(path.join(spec.dir, f), { force: true });
    const helpers = await startHelpers(spec, this.env);
    try {
      const qemu = await runQemu(spec, argv, this.env, this.daemonizeTimeoutMs);
      return { qemu, ...helpers };
    } catch (e) {
      await this.stopHelpers(spec.dir);
      throw e;
    }
  }

  async restore(spec: VmSpec, opts: RestoreOptions): Promise<VmPids> {
    if (this.pids(spec.dir).qemu) throw new DriverError(`a VM is already running in ${spec.dir}`, 'stop it before restoring a saved state into it');
    if (!fs.existsSync(opts.stateFile)) throw new DriverError(`the saved state ${opts.stateFile} is missing`, 'boot the VM instead');
    const pids = await this.launch(spec, buildQemuArgv(this.sized(spec), { incoming: true }), true);
    try {
      await loadState(path.join(spec.dir, VM.qmpSock), opts.stateFile, opts.skipSharedMemory, opts.timeoutMs ?? 60_000);
      await opts.beforeRun?.();
      // A VM saved while paused restores paused.
      await qmpCommand(path.join(spec.dir, VM.qmpSock), 'cont');
    } catch (e) {
      await this.stop(spec.dir, { timeoutMs: 0 });
      const why = e instanceof Error ? e.message : String(e);
      const said = tail(path.join(spec.dir, VM.qemuLog), 1).slice(0, 300);
      throw new DriverError(`restoring ${path.basename(opts.stateFile)} failed: ${why}${said ? ` (qemu: ${said})` : ''}`, 'boot the VM instead', { cause: e });
    }
    return pids;
  }

  async pause(dir: string): Promise<void> {
    await qmpCommand(path.join(dir, VM.qmpSock), 'stop');
  }

  async resume(dir: string): Promise<void> {
    await qmpCommand(path.join(dir, VM.qmpSock), 'cont');
  }

  async forwardPort(dir: string, hostPort: number, guestPort: number): Promise<void> {
    const said = await qmpCommand(path.join(dir, VM.qmpSock), 'human-monitor-command', { 'command-line': hostfwdCommand('add', hostPort, guestPort) });
    // HMP answers with text: nothing on success, the reason otherwise.
    if (typeof said === 'string' && said.trim() !== '') throw new DriverError(`cannot forward 127.0.0.1:${hostPort} to the guest: ${said.trim()}`, 'the host port may be in use');
  }

  async unforwardPort(dir: string, hostPort: number): Promise<void> {
    await qmpCommand(path.join(dir, VM.qmpSock), 'human-monitor-command', { 'command-line': hostfwdCommand('remove', hostPort) });
  }

  saveBlockers(dir: string): Promise<string[]> {
    return saveBlockers(path.join(dir, VM.qmpSock));
  }

  save(dir: string, stateFile: string, opts: SaveOptions): Promise<SaveResult> {
    return saveState(path.join(dir, VM.qmpSock), stateFile, opts.skipSharedMemory);
  }

  async stop(dir: string, opts: StopOptions = {}): Promise<void> {
    const owner = path.resolve(dir);
    const qemu = this.pids(dir).qemu;
    if (qemu) {
      if ((opts.timeoutMs ?? 10_000) > 0) await qmpQuit(path.join(dir, VM.qmpSock), 5000).catch(() => undefined);
      if (!(await waitGone(qemu, opts.timeoutMs ?? 10_000, owner))) {
        signal(qemu, 'SIGTERM', owner);
        if (!(await waitGone(qemu, 5000, owner))) {
          signal(qemu, 'SIGKILL', owner);
          await waitGone(qemu, 5000, owner);
        }
      }
    }
    await this.stopHelpers(dir);
    // What no pid file names: a helper coved started just before it was killed.
    for (const pid of vmProcessesIn(owner)) {
      signal(pid, 'SIGKILL', owner);
      await waitGone(pid, 5000, owner);
    }
    for (const f of [VM.qemuPid, VM.virtiofsdPid, VM.passtPid, VM.qmpSock, VM.agentSock, VM.dataSock, VM.stdinSock, VM.virtiofsSock, VM.netSock]) fs.rmSync(path.join(dir, f), { force: true });
  }

  private async stopHelpers(dir: string): Promise<void> {
    const owner = path.resolve(dir);
    for (const pidFile of [VM.virtiofsdPid, VM.passtPid]) {
      const helper = readPid(path.join(dir, pidFile));
      if (!processAlive(helper, owner)) continue;
      signal(helper, 'SIGTERM', owner);
      if (!(await waitGone(helper, 5000, owner))) signal(helper, 'SIGKILL', owner);
    }
  }
}
