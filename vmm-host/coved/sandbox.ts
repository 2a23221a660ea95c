// One sandbox as coved sees it: its folder on disk, its qemu (and virtiofsd), its agent link, its
// Docker and SSH sockets and its port forwards. Operations on one sandbox run one at a time.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Duplex } from 'node:stream';
import type * as net from 'node:net';
import type { AgentEvent } from '../../contract/events';
import { CoveError, conflict, messageOf } from '../../contract/errors';
import { ErrorCodes, type Accel, type MountType, type PortForward, type SandboxInfo, type SandboxState } from '../../contract/protocol';
import { VM, vmDir } from '../../contract/layout';
import { GUEST } from '../../contract/guest';
import { AgentLink } from './agent-link';
import { readJson, tailFile, writeJsonAtomic } from './files';
import { readKeys } from './keys';
import { PortForwarder } from './ports';
import { processAlive, signal, waitGone } from './proc';
import { dockerUnavailable, startRelay } from './relay';
import type { Coved } from './coved';
import * as vm from './vm';

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
  createdAt: string;
  /** Ports added with `cove publish`, kept across restarts. */
  published: Array<{ hostPort: number; guestPort: number }>;
  /** Host 127.0.0.1 ports the guest may reach, at guest 127.0.0.1 on the same port. */
  allowHostPorts?: number[];
  /** Never paused or put to sleep when idle. */
  keepAwake?: boolean;
}

/** What `vms/<name>/state.json` holds: what is running now. */
export interface SandboxRuntime {
  state: SandboxState;
  accel: Accel | null;
  /** The mount type actually in use (9p when virtio-fs was not available). */
  mount: MountType | null;
  pids: { qemu: number | null; virtiofsd: number | null; passt?: number | null };
  /** The network in use: passt, or qemu's user networking where passt is missing. */
  network?: 'passt' | 'user';
  startedAt: string | null;
  bootSeconds: number | null;
  bootKind?: 'cold' | 'template' | 'wake' | null;
  warmNote?: string;
  problem?: string;
  consoleTail?: string;
}

export class Sandbox {
  readonly dir: string;
  runtime: SandboxRuntime;
  private link: AgentLink | null = null;
  private ports: PortForwarder | null = null;
  private relays: net.Server[] = [];
  private dockerReady = false;
  private readyWaiters: Array<() => void> = [];
  private monitor: NodeJS.Timeout | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  private contextName: string | null = null;

  constructor(
    private readonly coved: Coved,
    public config: SandboxConfig,
  ) {
    this.dir = vmDir(config.name, coved.home);
    this.runtime = readJson<SandboxRuntime>(this.file('state')) ?? {
      state: 'stopped',
      accel: null,
      mount: null,
      pids: { qemu: null, virtiofsd: null, passt: null },
      startedAt: null,
      bootSeconds: null,
    };
  }

  get name(): string {
    return this.config.name;
  }

  file(key: keyof typeof VM): string {
    return path.join(this.dir, VM[key]);
  }

  private log(msg: string): void {
    this.coved.log(`[${this.name}] ${msg}`);
  }

  /** Runs `op` after every operation queued before it on this sandbox. */
  serialize<T>(op: () => Promise<T>): Promise<T> {
    const next = this.queue.then(op, op);
    this.queue = next.catch(() => undefined);
    return next;
  }

  info(): SandboxInfo {
    return {
      name: this.name,
      state: this.runtime.state,
      workspace: this.config.workspace,
      mount: this.runtime.mount ?? this.config.mount,
      network: this.runtime.network ?? null,
      readonly: this.config.readonly,
      allowHostPorts: this.config.allowHostPorts ?? [],
      cpus: this.config.cpus,
      memoryMiB: this.config.memoryMiB,
      diskGiB: this.config.diskGiB,
      accel: this.runtime.accel,
      context: this.contextName,
      dockerHost: `unix://${this.file('dockerSock')}`,
      dir: this.dir,
      image: this.config.image,
      ports: this.ports?.list() ?? [],
      dockerReady: this.dockerReady,
      bootSeconds: this.runtime.bootSeconds,
      bootKind: this.runtime.bootKind ?? null,
      keepAwake: this.config.keepAwake ?? false,
      ...(this.runtime.warmNote ? { warmNote: this.runtime.warmNote } : {}),
      pids: { qemu: this.runtime.pids.qemu, virtiofsd: this.runtime.pids.virtiofsd, passt: this.runtime.pids.passt ?? null },
      createdAt: this.config.createdAt,
      ...(this.runtime.consoleTail ? { consoleTail: this.runtime.consoleTail } : {}),
      ...(this.runtime.problem ? { problem: this.runtime.problem } : {}),
    };
  }

  saveConfig(): void {
    writeJsonAtomic(this.file('config'), this.config);
  }

  private setState(state: SandboxState, extra: Partial<SandboxRuntime> = {}): void {
    this.runtime = { ...this.runtime, ...extra, state };
    if (state === 'running' || state === 'starting' || state === 'stopped') {
      if (!('problem' in extra)) delete this.runtime.problem;
      if (!('consoleTail' in extra)) delete this.runtime.consoleTail;
    }
    try {
      writeJsonAtomic(this.file('state'), this.runtime);
    } catch (e) {
      this.log(`cannot save state: ${messageOf(e)}`);
    }
    this.coved.sandboxChanged(this);
  }

  /** The host sockets live as long as coved does, so a stopped sandbox answers with a clear error. */
  async openSockets(): Promise<void> {
    if (this.relays.length > 0) return;
    this.relays.push(
      await startRelay({
        path: this.file('dockerSock'),
        log: (m) => this.log(m),
        open: () => this.openGuest(GUEST.dockerSock, 'dockerd'),
        unavailable: (conn, err) => dockerUnavailable(conn, `cove: ${err.message}`),
      }),
      await startRelay({
        path: this.file('sshSock'),
        log: (m) => this.log(m),
        open: () => this.openGuest(GUEST.agentSock, 'the agent'),
        unavailable: (conn) => conn.destroy(),
      }),
    );
  }

  async closeSockets(): Promise<void> {
    const relays = this.relays.splice(0);
    await Promise.all(relays.map((s) => new Promise<void>((r) => s.close(() => r()))));
    for (const f of ['dockerSock', 'sshSock'] as const) fs.rmSync(this.file(f), { force: true });
  }

  private async openGuest(socketPath: string, what: string): Promise<Duplex> {
    const state = this.runtime.state;
    if (state !== 'running' && state !== 'starting') {
      const how = state === 'crashed' ? `crashed (${this.runtime.problem ?? 'see cove logs'}); start it again with \`cove start ${this.name}\`` : `${state}; start it with \`cove start ${this.name}\``;
      throw new Error(`sandbox ${this.name} is ${how}`);
    }
    const link = this.link;
    if (!link) throw new Error(`sandbox ${this.name} has no agent link`);
    await link.waitUp(this.coved.timeouts.socketWaitMs, `sandbox ${this.name}'s agent`);
    try {
      return await link.streamLocal(socketPath);
    } catch (e) {
      throw new Error(`${what} in sandbox ${this.name} is not answering (${messageOf(e)}); it may still be starting`);
    }
  }

  // ---- lifecycle ---------------------------------------------------------------------------

  /** Boots the VM and waits for dockerd; on failure the VM is stopped and the state is crashed. */
  async start(onStep: (step: string, message: string, fraction?: number) => void): Promise<void> {
    if (this.runtime.state === 'running' && processAlive(this.runtime.pids.qemu, this.dir)) return;
    const imageDir = path.join(this.coved.imagesDir, this.config.image);
    if (!fs.existsSync(imageDir)) {
      throw new CoveError(
        ErrorCodes.conflict,
        `the image ${this.config.image} that sandbox ${this.name} was made from is gone`,
        `remove the sandbox with \`cove rm ${this.name}\` (its Docker data goes with it) and run \`cove up\` again`,
      );
    }
    await vm.checkImageFor(imageDir, this.config);
    const started = Date.now();
    onStep('accel', 'checking for KVM', 0.05);
    const accel = await this.coved.accel(imageDir);
    onStep('boot', `starting the VM (${accel.accel.toUpperCase()})`, 0.1);
    fs.rmSync(this.file('consoleLog'), { force: true });
    this.dockerReady = false;
    this.setState('starting', { accel: accel.accel, startedAt: new Date().toISOString(), bootSeconds: null });
    const keys = readKeys(this.dir);
    let pids: Awaited<ReturnType<typeof vm.boot>>;
    try {
      pids = await vm.boot({ sandbox: this, imageDir, accel, keys, log: (m) => this.log(m) });
    } catch (e) {
      this.setState('crashed', { problem: messageOf(e), consoleTail: tailFile(this.file('consoleLog')) || tailFile(this.file('qemuLog')) });
      throw e instanceof CoveError ? e : new CoveError(ErrorCodes.boot, `sandbox ${this.name} could not start: ${messageOf(e)}`, `see ${this.file('qemuLog')}`);
    }
    this.setState('starting', { pids: { qemu: pids.qemu, virtiofsd: pids.virtiofsd, passt: pids.passt }, mount: pids.mount, network: pids.network });
    await this.attach();
    const stopWatching = vm.watchConsole(this.file('consoleLog'), (step, message, fraction) => onStep(step, message, 0.1 + 0.8 * fraction));
    try {
      const deadline = accel.accel === 'kvm' ? this.coved.timeouts.bootKvmMs : this.coved.timeouts.bootTcgMs;
      await this.waitDockerReady(deadline, started);
    } catch (e) {
      stopWatching();
      const tail = tailFile(this.file('consoleLog'));
      const problem = messageOf(e);
      await this.kill();
      this.setState('crashed', { problem, consoleTail: tail });
      throw new CoveError(ErrorCodes.boot, `sandbox ${this.name} did not become ready: ${problem}`, `see the console log: ${this.file('consoleLog')}`, tail);
    }
    stopWatching();
    this.setState('running', { bootSeconds: Math.round((Date.now() - started) / 100) / 10 });
    onStep('ready', 'dockerd is ready', 1);
  }

  private async waitDockerReady(timeoutMs: number, since: number): Promise<void> {
    const left = () => timeoutMs - (Date.now() - since);
    await this.link!.waitUp(Math.max(left(), 1000), 'the guest agent');
    if (this.dockerReady) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`dockerd did not answer /_ping within ${Math.round(timeoutMs / 1000)} s of boot`)), Math.max(left(), 1000));
      const crashCheck = setInterval(() => {
        if (!processAlive(this.runtime.pids.qemu, this.dir)) {
          clearTimeout(timer);
          clearInterval(crashCheck);
          reject(new Error('qemu exited during boot'));
        }
      }, 500);
      this.readyWaiters.push(() => {
        clearTimeout(timer);
        clearInterval(crashCheck);
        resolve();
      });
    });
  }

  /** Connects to a running VM: agent link, port forwards, crash monitor. Used at boot and on coved restart. */
  async attach(): Promise<void> {
    await this.openSockets();
    if (this.link) return;
    const keys = readKeys(this.dir);
    const link = new AgentLink({
      agentSock: this.file('agentSock'),
      hostKey: keys.hostPublic,
      clientKey: keys.clientPrivate,
      allowHostPorts: this.config.allowHostPorts,
      log: (m) => this.log(m),
      handshakeTimeoutMs: this.coved.timeouts.handshakeMs,
      firstHandshakeTimeoutMs: this.runtime.state === 'starting' ? this.coved.timeouts.bootTcgMs : this.coved.timeouts.handshakeMs,
    });
    this.link = link;
    this.ports = new PortForwarder(link, (port, action) => this.coved.portChanged(this, port, action), (m) => this.log(m));
    link.on('event', (ev: AgentEvent) => this.onAgentEvent(ev));
    link.on('down', () => {
      this.dockerReady = false;
      this.coved.sandboxChanged(this);
    });
    link.start();
    for (const p of this.config.published) void this.ports.add(p.hostPort, p.guestPort, 'manual');
    this.monitor = setInterval(() => this.checkAlive(), 1000);
    if (this.runtime.state === 'running') await this.ensureContext();
  }

  private onAgentEvent(ev: AgentEvent): void {
    switch (ev.type) {
      case 'hello':
        this.setDockerReady(ev.dockerd === 'running');
        this.ports?.syncAuto(ev.ports);
        break;
      case 'ready':
        this.setDockerReady(true);
        break;
      case 'dockerd':
        this.setDockerReady(ev.state === 'running');
        break;
      case 'port':
        if (ev.action === 'added') this.ports?.addAuto(ev);
        else this.ports?.removeAuto(ev);
        break;
      case 'shutdown':
        this.log(`guest is shutting down: ${ev.reason}`);
        break;
    }
  }

  private setDockerReady(ready: boolean): void {
    const changed = this.dockerReady !== ready;
    this.dockerReady = ready;
    if (ready) for (const w of this.readyWaiters.splice(0)) w();
    if (changed) this.coved.sandboxChanged(this);
  }

  private checkAlive(): void {
    const st = this.runtime.state;
    if (st !== 'running' && st !== 'starting') return;
    if (processAlive(this.runtime.pids.qemu, this.dir)) {
      if (this.runtime.mount === 'virtiofs' && this.runtime.pids.virtiofsd && !processAlive(this.runtime.pids.virtiofsd, this.dir)) {
        if (!this.runtime.problem) {
          this.runtime.problem = 'virtiofsd exited: the workspace mount in the guest no longer works; restart the sandbox (`cove stop` then `cove start`)';
          this.log(this.runtime.problem);
          this.setState(st, { problem: this.runtime.problem });
        }
      }
      return;
    }
    if (st === 'starting') return; // start() reports it.
    const tail = tailFile(this.file('consoleLog'));
    this.log('qemu exited unexpectedly');
    void this.detach();
    this.signalHelpers('SIGTERM');
    this.setState('crashed', { problem: 'the VM exited unexpectedly (qemu is gone)', consoleTail: tail });
  }

  /** Drops coved's side (link, forwards, monitor) without touching the VM. */
  async detach(): Promise<void> {
    if (this.monitor) clearInterval(this.monitor);
    this.monitor = null;
    this.link?.close();
    this.link = null;
    await this.ports?.closeAll();
    this.ports = null;
    this.dockerReady = false;
  }

  /** virtiofsd and passt: the VM's helper processes, which outlive coved like qemu does. */
  private signalHelpers(sig: NodeJS.Signals): void {
    signal(this.runtime.pids.virtiofsd, sig, this.dir);
    signal(this.runtime.pids.passt, sig, this.dir);
  }

  private async stopHelpers(): Promise<void> {
    this.signalHelpers('SIGTERM');
    await waitGone(this.runtime.pids.virtiofsd, 5000, this.dir);
    await waitGone(this.runtime.pids.passt, 5000, this.dir);
    this.signalHelpers('SIGKILL');
  }

  /** Kills qemu and its helpers at once. */
  private async kill(): Promise<void> {
    await this.detach();
    signal(this.runtime.pids.qemu, 'SIGKILL', this.dir);
    await waitGone(this.runtime.pids.qemu, 5000, this.dir);
    this.signalHelpers('SIGKILL');
    await waitGone(this.runtime.pids.virtiofsd, 5000, this.dir);
  }

  /** Saves the VM to disk and ends its processes (warm start's sleep). */
  async sleep(): Promise<void> {
    throw new CoveError(ErrorCodes.conflict, `sandbox ${this.name} cannot sleep yet`, 'stop it with `cove stop` instead');
  }

  async stop(force: boolean): Promise<void> {
    const st = this.runtime.state;
    if (st === 'stopped') return;
    const qemu = this.runtime.pids.qemu;
    if (!processAlive(qemu, this.dir)) {
      await this.detach();
      await this.stopHelpers();
      this.setState('stopped', { pids: { qemu: null, virtiofsd: null, passt: null } });
      return;
    }
    this.setState('stopping');
    const link = this.link;
    if (!force && link?.isUp) {
      // The link drops as the guest powers off, so the command's own end is not awaited.
      link.exec(GUEST.poweroff, 5000).catch(() => undefined);
      // With virtiofsd gone the guest cannot unmount the folder cleanly; don't wait long for it.
      const vfsDead = this.runtime.pids.virtiofsd !== null && !processAlive(this.runtime.pids.virtiofsd, this.dir);
      const wait = vfsDead ? Math.min(20_000, this.coved.timeouts.stopMs) : this.coved.timeouts.stopMs;
      if (!(await waitGone(qemu, wait, this.dir))) this.log('the guest did not power off in time; quitting qemu');
    }
    await this.detach();
    if (processAlive(qemu, this.dir)) {
      await vm.quit(this.file('qmpSock')).catch((e) => this.log(`QMP quit failed: ${messageOf(e)}`));
      if (!(await waitGone(qemu, 10_000, this.dir))) {
        signal(qemu, 'SIGKILL', this.dir);
        await waitGone(qemu, 5000, this.dir);
      }
    }
    await this.stopHelpers();
    this.setState('stopped', { pids: { qemu: null, virtiofsd: null, passt: null } });
  }

  async ensureContext(): Promise<void> {
    this.contextName = await this.coved.ensureContext(this.name, this.file('dockerSock'));
  }

  async publish(hostPort: number, guestPort: number): Promise<PortForward> {
    if (!this.config.published.some((p) => p.hostPort === hostPort)) {
      const clash = this.ports?.list().find((p) => p.hostPort === hostPort && !(p.origin === 'auto' && p.guestPort === guestPort));
      if (clash) throw conflict(`host port ${hostPort} already forwards to guest port ${clash.guestPort}`, `unpublish it first, or pick another host port`);
      this.config.published.push({ hostPort, guestPort });
      this.saveConfig();
    }
    if (!this.ports) return { hostPort, guestPort, origin: 'manual' };
    return this.ports.add(hostPort, guestPort, 'manual');
  }

  async unpublish(hostPort: number): Promise<void> {
    this.config.published = this.config.published.filter((p) => p.hostPort !== hostPort);
    this.saveConfig();
    await this.ports?.remove(hostPort);
  }

  /** Re-attaches after a coved restart, or records a crash that happened while coved was away. */
  async recover(): Promise<void> {
    const st = this.runtime.state;
    if (st === 'stopped' || st === 'crashed') {
      await this.openSockets();
      await this.ensureContext().catch((e) => this.log(`context: ${messageOf(e)}`));
      return;
    }
    if (processAlive(this.runtime.pids.qemu, this.dir)) {
      this.log(`re-attaching to the running VM (qemu pid ${this.runtime.pids.qemu})`);
      await this.attach();
      if (st === 'stopping' || st === 'starting') {
        // coved died in the middle of an operation: finish it in the direction that is safe.
        if (st === 'stopping') await this.stop(false);
        else this.setState('running');
      }
      return;
    }
    await this.openSockets();
    this.setState(st === 'stopping' ? 'stopped' : 'crashed', {
      pids: { qemu: null, virtiofsd: null, passt: null },
      ...(st === 'stopping' ? {} : { problem: 'the VM exited while coved was not running', consoleTail: tailFile(this.file('consoleLog')) }),
    });
    this.signalHelpers('SIGTERM');
  }
}
