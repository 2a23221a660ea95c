// One sandbox as coved sees it: its folder on disk, its VM (through the driver), its agent link, its
// Docker and SSH sockets and its port forwards. It owns its lifecycle — cold boot, restore from a
// warm-start template, pause, sleep to disk and wake — and reports changes as events ('changed',
// 'port'); it never calls back into coved. Operations on one sandbox run one at a time.
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Duplex } from 'node:stream';
import type * as http2 from 'node:http2';
import * as net from 'node:net';
import type { AgentEvent } from '../../contract/events';
import { CoveError, conflict, messageOf } from '../../contract/errors';
import { GUEST } from '../../contract/guest';
import { IMAGE, VM, vmDir } from '../../contract/layout';
import { ErrorCodes, type Accel, type ExtraMount, type MountType, type PortForward, type SandboxInfo, type SandboxState } from '../../contract/protocol';
import { waitFor } from '../../contract/wait';
import { CONTROL_ENTROPY_BYTES } from '../../contract/control';
import { DOCKER_STDIN_PORT_HEADER, dataAuthority, type DataTarget } from '../../contract/data-channel';
import { guestAslr, processAlive, type AccelResult, type Driver, type VmSpec } from '../driver';
import { AgentLink } from './agent-link';
import { DataLink, DataLinkDown, dataChannelEnabled, isDataLinkDown, type OpenedStream } from './data-link';
import { startExecRelay } from './exec-relay';
import { EXEC_STDIN_PORT_HEADER, EXEC_STDOUT_PORT_HEADER } from '../../contract/exec-stream';
import { StreamPool } from './stream-pool';
import { stallText, watchConsole, type BootStall } from './boot-progress';
import { readJson, tailFile, writeJsonAtomic } from './files';
import { sandboxSpec, writeSandboxConfigDisk, type SandboxConfig } from './guest-config';
import { readKeys, type SandboxKeys } from './keys';
import { boundConsoleLog } from './console-bound';
import { kernelCrashReason } from './guest-crash';
import { PortForwarder } from './ports';
import { NicForwards } from './nic-forwards';
import { GUEST_FORWARD_NIC } from '../../contract/guest';
import { startRelay } from './relay';
import { startDockerProxy } from './docker-proxy';
import { SplitChannel, StdinPortLease, closed, stdinPortSink, uploadPortEnabled } from './stdin-port';
import type { BindPolicy } from './bind-guard';
import { mountSpec, prepareMounts } from './mounts';
import { sha256File, type Template, type Templates } from './templates';
import { networkFor } from './host-checks';
import * as images from './images';

export type { SandboxConfig } from './guest-config';

export interface Timeouts {
  bootTcgMs: number;
  bootKvmMs: number;
  handshakeMs: number;
  socketWaitMs: number;
  stopMs: number;
}

/** When an idle sandbox is paused, then put to sleep (0 = never), and what counts as a quiet guest. */
export interface IdlePolicy {
  pauseAfterMs: number;
  sleepAfterMs: number;
  /** The guest is quiet while qemu uses less than this share of one host CPU. */
  quietCpu: number;
}

/** What a sandbox needs from its surroundings; coved provides it, tests may too. */
export interface SandboxDeps {
  home: string;
  imagesDir: string;
  timeouts: Timeouts;
  idle: IdlePolicy;
  log(msg: string): void;
  accel(imageDir: string): Promise<AccelResult>;
  driver(accel: Accel): Driver;
  ensureContext(name: string, dockerSock: string): Promise<string | null>;
  templates: Templates;
}

/** What `vms/<name>/state.json` holds: what is running now. */
export interface SandboxRuntime {
  state: SandboxState;
  accel: Accel | null;
  /** The mount type actually in use (9p when virtio-fs was not available or cannot be saved). */
  mount: MountType | null;
  pids: { qemu: number | null; virtiofsd: number | null; passt?: number | null };
  /** The network in use: passt, or qemu's user networking where passt is missing. */
  network?: 'passt' | 'user';
  startedAt: string | null;
  bootSeconds: number | null;
  bootKind?: 'cold' | 'template' | 'wake' | null;
  /** The spec the VM runs from: a sleep restores into exactly this. */
  spec?: VmSpec;
  /** The extra mounts the VM was started with (a wake keeps them; a start takes the config's). */
  mounts?: ExtraMount[];
  /** An asleep sandbox's automatic port forwards, listened on again by a restarted coved. */
  asleepPorts?: number[];
  /** A restore whose rebirth or resume had not finished (coved died): the VM cannot be trusted. */
  pending?: 'rebirth' | 'wake';
  warmNote?: string;
  problem?: string;
  consoleTail?: string;
}

interface SleepManifest {
  version: 1;
  savedAt: string;
  sha256: string;
  bytes: number;
  hypervisor: string;
  spec: VmSpec;
}

const ms = (t0: number) => Date.now() - t0;

/** Streams to the guest's dockerd kept open ahead of need (stream-pool.ts). */
const DOCKER_POOL_SIZE = 4;

/** A text file's content, or empty when it cannot be read. */
function readText(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

export class Sandbox extends EventEmitter {
  readonly dir: string;
  runtime: SandboxRuntime;
  private link: AgentLink | null = null;
  /** The data channel (HTTP/2 over the second port) and its ready streams to dockerd; null on SSH only. */
  private data: DataLink | null = null;
  private pool: StreamPool | null = null;
  private ports: PortForwarder | null = null;
  /** hostfwds on the forwarding NIC, used while the guest reports that NIC set up (`forwardAddress`). */
  private readonly nic = new NicForwards(
    {
      forwardPort: (hostPort, guestPort) => this.driver().forwardPort(this.dir, hostPort, guestPort),
      // A gone VM took its hostfwds with it.
      unforwardPort: async (hostPort) => (this.alive() ? this.driver().unforwardPort(this.dir, hostPort) : undefined),
    },
    (m) => this.log(m),
  );
  /** The guest set its forwarding NIC up (its hello said so): forwarded ports to every address go through it. */
  private nicReady = false;
  /** Set once a connection through the forwarding NIC failed, so the fallback is logged once. */
  private nicFailed = false;
  private relays: net.Server[] = [];
  /** The stdin port, held by one `cove exec` or one Docker upload at a time (stdin-port.ts). */
  private readonly stdinLease = new StdinPortLease();
  private dockerReady = false;
  private readyWaiters: Array<() => void> = [];
  private monitor: NodeJS.Timeout | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  private contextName: string | null = null;
  /** Open client connections (docker.sock, ssh.sock, forwarded ports): a sandbox with any is not idle. */
  private openConns = 0;
  private lastActive = Date.now();
  private lastCpu: { at: number; ticks: number } | null = null;
  private waking: Promise<void> | null = null;
  /** Set while a sleep ends the VM on purpose, so the crash monitor does not take it for a crash. */
  private ending = false;
  /** When a sleep was last refused (a busy share): the idle policy tries again a sleep period later. */
  private sleepRefusedAt = 0;
  private clockStep: NodeJS.Timeout | null = null;

  constructor(
    private readonly deps: SandboxDeps,
    public config: SandboxConfig,
  ) {
    super();
    this.dir = vmDir(config.name, deps.home);
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

  private get imageDir(): string {
    return path.join(this.deps.imagesDir, this.config.image);
  }

  private log(msg: string): void {
    this.deps.log(`[${this.name}] ${msg}`);
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
      mounts: this.config.mounts ?? [],
      ...(this.mountsNote() ? { mountsNote: this.mountsNote() } : {}),
      bindGuard: this.config.bindGuard !== false,
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
      pids: { qemu: this.runtime.pids.qemu, virtiofsd: this.runtime.pids.virtiofsd, passt: this.runtime.pids.passt ?? null },
      createdAt: this.config.createdAt,
      ...(this.runtime.warmNote ? { warmNote: this.runtime.warmNote } : {}),
      ...(this.runtime.consoleTail ? { consoleTail: this.runtime.consoleTail } : {}),
      ...(this.runtime.problem ? { problem: this.runtime.problem } : {}),
    };
  }

  /** Set while the VM runs (or sleeps) with other extra mounts than the config's. */
  private mountsNote(): string | undefined {
    const st = this.runtime.state;
    if (st === 'stopped' || st === 'crashed' || st === 'creating') return undefined;
    if (JSON.stringify(this.runtime.mounts ?? []) === JSON.stringify(this.config.mounts ?? [])) return undefined;
    return `the shared folders change on the next start: cove stop ${this.name} && cove start ${this.name}`;
  }

  /** What the Docker socket's bind guard allows right now, or null when it is off. */
  bindPolicy(): BindPolicy | null {
    if (this.config.bindGuard === false) return null;
    const mounts = this.config.mounts ?? [];
    return {
      sandbox: this.name,
      workspace: this.config.workspace,
      shared: [this.config.workspace, ...mounts.map((m) => m.guest)],
      mountSpecs: mounts.map(mountSpec),
    };
  }

  saveConfig(): void {
    writeJsonAtomic(this.file('config'), this.config);
  }

  private changed(): void {
    this.emit('changed');
  }

  private setState(state: SandboxState, extra: Partial<SandboxRuntime> = {}): void {
    this.runtime = { ...this.runtime, ...extra, state };
    if (state === 'running') this.lastActive = Date.now();
    if (state === 'running' || state === 'starting' || state === 'stopped') {
      if (!('problem' in extra)) delete this.runtime.problem;
      if (!('consoleTail' in extra)) delete this.runtime.consoleTail;
    }
    if ('pending' in extra && extra.pending === undefined) delete this.runtime.pending;
    if ('warmNote' in extra && extra.warmNote === undefined) delete this.runtime.warmNote;
    try {
      writeJsonAtomic(this.file('state'), this.runtime);
    } catch (e) {
      this.log(`cannot save state: ${messageOf(e)}`);
    }
    this.changed();
  }

  /** The agent link of a VM that is up (attach() made it). */
  private requireLink(): AgentLink {
    if (!this.link) throw new Error(`sandbox ${this.name} has no agent link`);
    return this.link;
  }

  private driver(): Driver {
    return this.deps.driver(this.runtime.accel ?? 'tcg');
  }

  private alive(): boolean {
    return processAlive(this.runtime.pids.qemu, this.dir);
  }

  // ---- host sockets ---------------------------------------------------------------------------

  /** The host sockets live as long as coved does, so a stopped sandbox answers with a clear error. */
  async openSockets(): Promise<void> {
    if (this.relays.length > 0) return;
    this.relays.push(
      // An HTTP proxy, not a raw relay: it reads container creates for the bind-source guard.
      await startDockerProxy({
        path: this.file('dockerSock'),
        log: (m) => this.log(m),
        open: () => this.openGuest(GUEST.dockerSock, 'dockerd'),
        openUpload: () => this.openDockerUpload(),
        unavailable: (err) => `cove: ${err.message}`,
        policy: () => this.bindPolicy(),
      }),
      await startRelay({
        path: this.file('sshSock'),
        log: (m) => this.log(m),
        open: () => this.openGuest(GUEST.agentSock, 'the agent'),
        unavailable: (conn) => conn.destroy(),
      }),
      await startExecRelay({
        path: this.file('execSock'),
        log: (m) => this.log(m),
        open: (authority, headers) => this.openExec(authority, headers),
        useSsh: (e) => isDataLinkDown(e),
        stdinSock: this.file('stdinSock'),
        lease: this.stdinLease,
      }),
    );
  }

  async closeSockets(): Promise<void> {
    const relays = this.relays.splice(0);
    await Promise.all(relays.map((s) => new Promise<void>((r) => s.close(() => r()))));
    for (const f of ['dockerSock', 'sshSock', 'execSock'] as const) fs.rmSync(this.file(f), { force: true });
  }

  /** Counts a client connection for idleness until its channel closes. */
  private track<T extends Duplex>(ch: T): T {
    this.openConns++;
    this.lastActive = Date.now();
    let done = false;
    ch.once('close', () => {
      if (done) return;
      done = true;
      this.openConns--;
      this.lastActive = Date.now();
    });
    return ch;
  }

  /** Wakes the sandbox and waits out a warm start; throws what to do when it is not running. */
  private async readyForClient(): Promise<void> {
    await this.ensureAwake();
    // A VM restored from the template is not this sandbox until its rebirth is done (keys, RNG,
    // clock, folder): no client reaches it before that.
    if (this.runtime.pending) {
      await waitFor(`sandbox ${this.name} to finish its warm start`, this.deps.timeouts.socketWaitMs, () => !this.runtime.pending, 50);
    }
    const state = this.runtime.state;
    if (state !== 'running' && state !== 'starting') {
      const how = state === 'crashed' ? `crashed (${this.runtime.problem ?? 'see cove logs'}); start it again with \`cove start ${this.name}\`` : `${state}; start it with \`cove start ${this.name}\``;
      throw new Error(`sandbox ${this.name} is ${how}`);
    }
  }

  /**
   * A connection to dockerd for one request with a large body: its request bytes on the stdin port
   * when the VM has one, the data channel is up and the port is free (agent/docker-upload.ts), else
   * an ordinary connection. Never from the pool: the ask goes with the open.
   */
  private async openDockerUpload(): Promise<Duplex> {
    await this.readyForClient();
    const data = this.data;
    if (!data?.isUp || this.runtime.spec?.stdinPort !== true || !uploadPortEnabled() || !this.stdinLease.take()) return this.openGuest(GUEST.dockerSock, 'dockerd');
    const nonce = randomBytes(16).toString('hex');
    let opened: OpenedStream;
    try {
      opened = await data.request(dataAuthority({ kind: 'docker' }), { [DOCKER_STDIN_PORT_HEADER]: nonce });
    } catch (e) {
      this.stdinLease.release();
      if (!isDataLinkDown(e)) throw e;
      return this.openGuest(GUEST.dockerSock, 'dockerd');
    }
    if (opened.headers[DOCKER_STDIN_PORT_HEADER] !== nonce) {
      // The agent did not take the port (an older image, or something in the guest holds it).
      this.stdinLease.release();
      return this.track(opened.stream);
    }
    const sink = stdinPortSink(this.file('stdinSock'), nonce, (m) => this.log(m), 'docker upload');
    void Promise.all([closed(opened.stream), closed(sink)]).then(() => this.stdinLease.release());
    return this.track(new SplitChannel(sink, opened.stream));
  }

  /** An exec stream for exec.sock; DataLinkDown when the client should use SSH instead. */
  private async openExec(authority: string, headers: http2.OutgoingHttpHeaders): Promise<OpenedStream> {
    await this.readyForClient();
    const data = this.data;
    if (!data?.isUp) throw new DataLinkDown('the data channel is not up');
    // A VM made before the stdin port existed (restored with its old devices) has none to offer.
    const sent = this.runtime.spec?.stdinPort === true ? headers : Object.fromEntries(Object.entries(headers).filter(([k]) => k !== EXEC_STDIN_PORT_HEADER && k !== EXEC_STDOUT_PORT_HEADER));
    try {
      const opened = await data.request(authority, sent);
      this.track(opened.stream);
      return opened;
    } catch (e) {
      if (isDataLinkDown(e)) this.log(`data channel: ${messageOf(e)}; cove exec uses SSH`);
      throw e;
    }
  }

  private async openGuest(socketPath: string, what: string): Promise<Duplex> {
    await this.readyForClient();
    const link = this.link;
    if (!link) throw new Error(`sandbox ${this.name} has no agent link`);
    if (socketPath === GUEST.dockerSock) {
      const ready = this.pool?.take();
      if (ready) return this.track(ready);
      const viaData = await this.openData({ kind: 'docker' });
      if (viaData) return viaData;
    } else if (socketPath === GUEST.agentSock) {
      // An SSH client's connection (cove exec, cove cp, OpenSSH): one SSH layer in the guest, not two.
      const viaData = await this.openData({ kind: 'agent' });
      if (viaData) return viaData;
    }
    await link.waitUp(this.deps.timeouts.socketWaitMs, `sandbox ${this.name}'s agent`);
    try {
      return this.track(await link.streamLocal(socketPath));
    } catch (e) {
      throw new Error(`${what} in sandbox ${this.name} is not answering (${messageOf(e)}); it may still be starting`, { cause: e });
    }
  }

  /**
   * A stream over the data channel when it is up, or null when the caller should use SSH (the
   * channel is down or broke on this open). A target the guest cannot reach is an error.
   */
  private async openData(target: DataTarget): Promise<Duplex | null> {
    const data = this.data;
    if (!data?.isUp) return null;
    try {
      return this.track(await data.open(target));
    } catch (e) {
      if (!isDataLinkDown(e)) throw e;
      this.log(`data channel: ${messageOf(e)}; using SSH for this connection`);
      return null;
    }
  }

  /**
   * A paused sandbox resumes and an asleep one wakes before a client connection is served: the
   * client waits, nothing fails. Concurrent connections share one wake.
   */
  async ensureAwake(): Promise<void> {
    this.lastActive = Date.now();
    const st = this.runtime.state;
    if (st !== 'paused' && st !== 'asleep') return;
    if (!this.waking) {
      this.waking = this.serialize(async () => {
        if (this.runtime.state === 'paused') await this.resume();
        else if (this.runtime.state === 'asleep') await this.start(() => undefined);
      }).finally(() => (this.waking = null));
    }
    await this.waking;
  }

  // ---- lifecycle ------------------------------------------------------------------------------

  /**
   * Brings the sandbox up: resumes a paused VM, wakes an asleep one, restores a new sandbox from
   * its template, else boots cold. On failure the VM is stopped and the state is crashed.
   */
  async start(onStep: (step: string, message: string, fraction?: number) => void): Promise<void> {
    const st = this.runtime.state;
    if (st === 'running' && this.alive()) return;
    if (st === 'paused' && this.alive()) return this.resume();
    if (!fs.existsSync(this.imageDir)) {
      throw new CoveError(
        ErrorCodes.conflict,
        `the image ${this.config.image} that sandbox ${this.name} was made from is gone`,
        `remove the sandbox with \`cove rm ${this.name}\` (its Docker data goes with it) and run \`cove up\` again`,
      );
    }
    await images.checkImageFor(this.imageDir, this.config);
    onStep('accel', 'checking for KVM', 0.05);
    const accel = await this.deps.accel(this.imageDir);
    if (st === 'asleep') {
      const note = await this.tryWarm('wake', () => this.wake(accel, onStep));
      if (note === null) return;
      onStep('boot', `waking from disk did not work (${note}); booting`, 0.1);
    } else if (this.config.template && !this.runtime.bootKind) {
      const tpl = this.deps.templates.open(this.imageDir, this.config.template);
      const note = tpl ? await this.tryWarm('template', () => this.restoreTemplate(tpl, accel, onStep)) : `its template ${this.config.template} is gone`;
      if (note === null) return;
      if (tpl) {
        // A template whose state is damaged or does not load is not used again; a restore that
        // failed later (a slow handshake under load, say) says nothing against the template.
        if (/damaged|restoring .* failed/.test(note)) this.deps.templates.markBad(tpl, note);
        // The restored guest may have written to the new disk: boot from a fresh one (the sandbox
        // holds no data of its own yet).
        fs.rmSync(this.file('disk'), { force: true });
        await this.deps.driver(accel.accel).create(
          sandboxSpec({ config: this.config, imageDir: this.imageDir, vmDir: this.dir, accel, mount: '9p', network: networkFor() }),
          { file: tpl.file('disk'), format: 'qcow2' },
          this.config.diskGiB * 1024 ** 3,
        );
      }
      onStep('boot', `the warm start did not work (${note}); booting`, 0.1);
    }
    await this.bootCold(accel, onStep);
  }

  /** Runs a warm path; on failure stops what it started and returns a one-line reason, else null. */
  private async tryWarm(what: 'wake' | 'template', run: () => Promise<void>): Promise<string | null> {
    try {
      await run();
      return null;
    } catch (e) {
      const note = messageOf(e).split('\n')[0];
      this.log(`${what === 'wake' ? 'wake from disk' : 'warm start'} failed, booting cold: ${note}`);
      await this.kill();
      this.setState('stopped', { pids: { qemu: null, virtiofsd: null, passt: null }, warmNote: `${what === 'wake' ? 'wake from disk' : 'warm start'} failed: ${note}`, pending: undefined });
      this.dropSleepState();
      return note;
    }
  }

  private chooseMount(driver: Driver): MountType {
    const c = this.config;
    if (c.mount === 'virtiofs' && !driver.features.virtiofs) {
      this.log('virtio-fs is not available on this host (no virtiofsd, or not root); using 9p');
      return '9p';
    }
    if (c.mount === 'virtiofs' && c.readonly && !driver.features.readonlyShares.virtiofs) {
      // The C virtiofsd cannot refuse writes; qemu's 9p server can (readonly=on), so a read-only
      // folder is enforced on the host side, where the guest cannot undo it.
      this.log('read-only folder: using 9p, whose read-only mode the host enforces');
      return '9p';
    }
    return c.mount;
  }

  /**
   * A cold boot. A boot whose guest kernel reports a hung task (seen twice in one CI run under TCG:
   * the initramfs's `mount` of a root disk that needed journal recovery blocked for good; a later
   * boot of the same disk was fine) is stopped at once and started again, once, instead of waiting
   * out the boot deadline: what a person would do, and a power cut is what ext4's journal is for.
   */
  private async bootCold(accel: AccelResult, onStep: (step: string, message: string, fraction?: number) => void, attempt = 1): Promise<void> {
    const started = Date.now();
    const driver = this.deps.driver(accel.accel);
    onStep('boot', `starting the VM (${accel.accel.toUpperCase()})`, 0.1);
    fs.rmSync(this.file('consoleLog'), { force: true });
    this.dockerReady = false;
    this.setState('starting', { accel: accel.accel, startedAt: new Date().toISOString(), bootSeconds: null });
    const keys = readKeys(this.dir);
    const mount = this.chooseMount(driver);
    const network = networkFor();
    if (network === 'user') this.log('passt is not installed: using qemu user networking, which lets the guest reach the host loopback');
    const spec = sandboxSpec({ config: this.config, imageDir: this.imageDir, vmDir: this.dir, accel, mount, network });
    const aslr = guestAslr(accel.accel, driver.features.version);
    try {
      prepareMounts(this.dir, this.config.mounts ?? [], this.name);
      writeSandboxConfigDisk(this.file('configDisk'), this.config, keys, mount, aslr);
      const pids = await driver.start(spec);
      this.setState('starting', { pids, mount, network, spec, bootKind: 'cold', mounts: this.config.mounts ?? [] });
    } catch (e) {
      this.setState('crashed', { problem: messageOf(e), consoleTail: tailFile(this.file('consoleLog')) || tailFile(this.file('qemuLog')) });
      throw e instanceof CoveError ? e : new CoveError(ErrorCodes.boot, `sandbox ${this.name} could not start: ${messageOf(e)}`, `see ${this.file('qemuLog')}`);
    }
    await this.attach();
    let onStall: (s: BootStall) => void = () => undefined;
    const stall = new Promise<never>((_, reject) => {
      onStall = (s) => reject(new BootStalled(s));
    });
    const stopWatching = watchConsole(this.file('consoleLog'), (step, message, fraction) => onStep(step, message, 0.1 + 0.8 * fraction), (s) => onStall(s));
    try {
      const deadline = accel.accel === 'kvm' ? this.deps.timeouts.bootKvmMs : this.deps.timeouts.bootTcgMs;
      await Promise.race([this.waitDockerReady(deadline, started), stall]);
    } catch (e) {
      stopWatching();
      const tail = tailFile(this.file('consoleLog'));
      const problem = messageOf(e);
      await this.kill();
      if (e instanceof BootStalled && attempt === 1) {
        this.log(`${problem} (${Math.round(ms(started) / 1000)} s into the boot); stopped it, starting it again once`);
        onStep('boot', `${problem}; starting it again`, 0.1);
        return this.bootCold(accel, onStep, attempt + 1);
      }
      this.setState('crashed', { problem, consoleTail: tail });
      throw new CoveError(ErrorCodes.boot, `sandbox ${this.name} did not become ready: ${problem}`, `see the console log: ${this.file('consoleLog')}`, tail);
    }
    stopWatching();
    this.setState('running', { bootSeconds: Math.round(ms(started) / 100) / 10 });
    onStep('ready', 'dockerd is ready', 1);
  }

  /** A new sandbox from its template: restore, then rebirth as itself before anything reaches it. */
  private async restoreTemplate(tpl: Template, accel: AccelResult, onStep: (step: string, message: string, fraction?: number) => void): Promise<void> {
    const started = Date.now();
    const driver = this.deps.driver(accel.accel);
    onStep('restore', 'restoring the warm-start template', 0.3);
    const keys = readKeys(this.dir);
    const spec = sandboxSpec({ config: this.config, imageDir: this.imageDir, vmDir: this.dir, accel, mount: '9p', network: tpl.manifest.binding.network as 'passt' | 'user', memoryFile: tpl.file('ram') });
    const sha = await sha256File(tpl.file('state'));
    if (sha !== tpl.manifest.stateSha256) throw new Error(`the template's saved state ${tpl.file('state')} is damaged (checksum mismatch)`);
    prepareMounts(this.dir, this.config.mounts ?? [], this.name);
    writeSandboxConfigDisk(this.file('configDisk'), this.config, keys, '9p', guestAslr(accel.accel, driver.features.version));
    // `cove logs` shows the boot this sandbox comes from (the template's), then what follows.
    fs.writeFileSync(this.file('consoleLog'), `${readText(path.join(tpl.dir, VM.consoleLog))}cove: restored from the warm-start template ${tpl.id} as ${this.name} at ${new Date().toISOString()}\n`, { mode: 0o600 });
    this.dockerReady = false;
    this.setState('starting', { accel: accel.accel, startedAt: new Date().toISOString(), bootSeconds: null, mount: '9p', network: spec.network, spec, pending: 'rebirth', mounts: this.config.mounts ?? [] });
    const pids = await driver.restore(spec, { stateFile: tpl.file('state'), skipSharedMemory: true, timeoutMs: 60_000 });
    this.setState('starting', { pids });
    const tRestored = Date.now();
    onStep('rebirth', 'making the restored VM this sandbox (keys, clock, RNG, folder)', 0.6);
    // The first connection pins the template's host key and logs in with its client key: only
    // the template's guest has them, and nothing else has reached this VM yet.
    await this.attach(tpl.keys);
    await this.requireLink().waitUp(this.deps.timeouts.handshakeMs, 'the restored guest agent');
    const tUp = Date.now();
    const answer = await this.requireLink().control({ op: 'rebirth', epochMs: Date.now(), entropy: randomBytes(CONTROL_ENTROPY_BYTES).toString('base64') }, 60_000);
    if (!answer.ok) throw new Error(`rebirth failed${answer.step ? ` at ${answer.step}` : ''}: ${answer.error}`);
    this.requireLink().rekey(keys.hostPublic, keys.clientPrivate);
    this.log(`restored from template ${tpl.id}: restore ${ms(started)} ms, agent ${tUp - tRestored} ms, rebirth ${ms(tUp)} ms (${JSON.stringify((answer as { ms?: unknown }).ms)})`);
    await this.waitDockerReady(60_000, Date.now());
    this.setState('running', { bootSeconds: Math.round(ms(started) / 100) / 10, bootKind: 'template', pending: undefined, warmNote: undefined });
    await this.ensureContext();
    onStep('ready', 'dockerd is ready', 1);
  }

  private async waitDockerReady(timeoutMs: number, since: number): Promise<void> {
    const left = () => timeoutMs - (Date.now() - since);
    await this.requireLink().waitUp(Math.max(left(), 1000), 'the guest agent');
    if (this.dockerReady) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`dockerd did not answer /_ping within ${Math.round(timeoutMs / 1000)} s of boot`)), Math.max(left(), 1000));
      const crashCheck = setInterval(() => {
        if (!this.alive()) {
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
  async attach(firstKeys?: SandboxKeys): Promise<void> {
    await this.openSockets();
    if (this.link) {
      this.link.start();
      this.data?.start();
      return;
    }
    const keys = firstKeys ?? readKeys(this.dir);
    const link = new AgentLink({
      agentSock: this.file('agentSock'),
      hostKey: keys.hostPublic,
      clientKey: keys.clientPrivate,
      allowHostPorts: this.config.allowHostPorts,
      log: (m) => this.log(m),
      handshakeTimeoutMs: this.deps.timeouts.handshakeMs,
      firstHandshakeTimeoutMs: this.runtime.state === 'starting' ? this.deps.timeouts.bootTcgMs : this.deps.timeouts.handshakeMs,
    });
    this.link = link;
    this.ensurePorts();
    link.on('event', (ev: AgentEvent) => this.onAgentEvent(ev));
    link.on('down', () => {
      this.dockerReady = false;
      this.changed();
      // The agent restarted or the VM stalled past the keepalives: the data channel's session is
      // as dead as the SSH one (a new agent ignores bytes that do not start with a hello).
      this.data?.reset('the agent link went down');
    });
    link.start();
    this.attachData();
    this.monitor ??= setInterval(() => this.tick(), 1000);
    if (this.runtime.state === 'running') await this.ensureContext();
  }

  /** The data channel, where the VM has the port and it is not turned off (COVE_DATA_CHANNEL=off). */
  private attachData(): void {
    if (this.data || !this.runtime.spec?.dataPort || !dataChannelEnabled()) return;
    const data = new DataLink({
      dataSock: this.file('dataSock'),
      log: (m) => this.log(m),
      // A hello lost to a fast reconnect (coved restarted) is retried after this: SSH carries the
      // traffic meanwhile.
      helloTimeoutMs: 5_000,
      firstHelloTimeoutMs: this.runtime.state === 'starting' ? this.deps.timeouts.bootTcgMs : 5_000,
    });
    const pool = new StreamPool({
      open: () => data.open({ kind: 'docker' }),
      size: DOCKER_POOL_SIZE,
      refillDelayMs: 200,
      maxAgeMs: 60_000,
      log: (m) => this.log(m),
    });
    // Whatever the state (a cold boot is still 'creating' when the channel comes up): the pool
    // retries with back-off until dockerd answers. Only a paused VM's pool stays empty.
    data.on('up', () => {
      if (this.runtime.state !== 'paused') pool.start();
    });
    data.on('down', () => pool.stop());
    this.data = data;
    this.pool = pool;
    data.start();
  }

  private onAgentEvent(ev: AgentEvent): void {
    switch (ev.type) {
      case 'hello':
        // Believed only for the address Cove gives that NIC: any other claim leaves the ports on
        // the data channel (a hostile guest can choose the path, not where a connection goes).
        this.nicReady = this.runtime.spec?.forwardNic === true && ev.forwardAddress === GUEST_FORWARD_NIC.address;
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
    if (changed) this.changed();
  }

  /** Once a second: crash detection, and the idle policy. */
  private tick(): void {
    const st = this.runtime.state;
    if (st !== 'running' && st !== 'starting' && st !== 'paused') return;
    if (this.ending) return;
    if (this.alive()) {
      boundConsoleLog(this.file('consoleLog'), (m) => this.log(m));
      if (this.runtime.mount === 'virtiofs' && this.runtime.pids.virtiofsd && !processAlive(this.runtime.pids.virtiofsd, this.dir)) {
        if (!this.runtime.problem) {
          this.log('virtiofsd exited: the workspace mount in the guest no longer works');
          this.setState(st, { problem: 'virtiofsd exited: the workspace mount in the guest no longer works; restart the sandbox (`cove stop` then `cove start`)' });
        }
      }
      this.idleTick();
      return;
    }
    if (st === 'starting') return; // start() reports it.
    const tail = tailFile(this.file('consoleLog'));
    const problem = this.exitReason('the VM exited unexpectedly (qemu is gone)');
    this.log(problem);
    void this.detach();
    void this.driver().stop(this.dir, { timeoutMs: 0 });
    this.setState('crashed', { problem, consoleTail: tail });
  }

  /** Why the VM ended: the guest kernel's crash line when the console has one, else `otherwise`. */
  private exitReason(otherwise: string): string {
    const crash = kernelCrashReason(tailFile(this.file('consoleLog'), 400));
    return crash ? `the guest kernel crashed: ${crash}` : otherwise;
  }

  /** The qemu process's CPU time in clock ticks (utime + stime). */
  private cpuTicks(): number | null {
    try {
      const stat = fs.readFileSync(`/proc/${this.runtime.pids.qemu}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return Number(f[11]) + Number(f[12]);
    } catch {
      return null;
    }
  }

  private idleTick(): void {
    const { pauseAfterMs, sleepAfterMs, quietCpu } = this.deps.idle;
    const st = this.runtime.state;
    if (this.config.keepAwake || (pauseAfterMs <= 0 && sleepAfterMs <= 0) || this.waking) return;
    const now = Date.now();
    if (st === 'running') {
      const ticks = this.cpuTicks();
      if (ticks !== null && this.lastCpu && now - this.lastCpu.at >= 5000) {
        const share = (ticks - this.lastCpu.ticks) / 100 / ((now - this.lastCpu.at) / 1000);
        if (share > quietCpu) this.lastActive = now;
        this.lastCpu = { at: now, ticks };
      } else if (ticks !== null && !this.lastCpu) {
        this.lastCpu = { at: now, ticks };
      }
    }
    if (this.openConns > 0) this.lastActive = now;
    const idleMs = now - this.lastActive;
    if (st === 'running' && pauseAfterMs > 0 && idleMs >= pauseAfterMs) {
      this.lastCpu = null;
      void this.serialize(async () => (this.runtime.state === 'running' && this.openConns === 0 ? this.pause() : undefined)).catch((e: unknown) => this.log(`pause failed: ${messageOf(e)}`));
    } else if ((st === 'paused' || (st === 'running' && pauseAfterMs <= 0)) && sleepAfterMs > 0 && idleMs >= pauseAfterMs + sleepAfterMs && now - this.sleepRefusedAt >= sleepAfterMs) {
      void this.serialize(async () => (this.openConns === 0 && (this.runtime.state === 'paused' || this.runtime.state === 'running') ? this.sleep() : undefined)).catch((e: unknown) => this.log(`sleep failed: ${messageOf(e)}`));
    }
  }

  /** Stops the vCPUs: no CPU use, the memory stays. The next connection resumes it. */
  async pause(): Promise<void> {
    if (this.runtime.state !== 'running') return;
    await this.driver().pause(this.dir);
    this.link?.hold();
    this.pool?.stop();
    this.log('paused (idle)');
    this.setState('paused');
  }

  async resume(): Promise<void> {
    if (this.runtime.state !== 'paused') return;
    await this.driver().resume(this.dir);
    this.link?.release();
    if (this.data?.isUp) this.pool?.start();
    this.lastActive = Date.now();
    this.setState('running');
    // The guest clock stood still while paused. Set it a moment later, so the guest's CPU serves
    // the client that woke it first (the step runs a helper process in the guest).
    if (this.clockStep) clearTimeout(this.clockStep);
    this.clockStep = setTimeout(() => {
      this.clockStep = null;
      if (this.runtime.state === 'running') void this.guestResume(false).catch((e: unknown) => this.log(`clock step after resume: ${messageOf(e)}`));
    }, 1000);
  }

  private async guestResume(remount: boolean): Promise<void> {
    const link = this.link;
    if (!link) return;
    await link.waitUp(this.deps.timeouts.handshakeMs, 'the guest agent');
    const answer = await link.control({ op: 'resume', epochMs: Date.now(), entropy: randomBytes(CONTROL_ENTROPY_BYTES).toString('base64'), remount }, 60_000);
    if (!answer.ok) throw new Error(`${answer.error}${answer.step ? ` (at ${answer.step})` : ''}`);
  }

  /**
   * Saves the VM to disk and ends its processes (no memory, no CPU); the next connection or
   * `cove start` wakes it. Guest file systems are synced first, so the disk and the saved RAM agree.
   * A sandbox whose share cannot be saved right now stays paused and says why.
   */
  async sleep(): Promise<void> {
    const st = this.runtime.state;
    if (st === 'asleep') return;
    if (st !== 'running' && st !== 'paused') throw conflict(`sandbox ${this.name} is ${st}`, 'only a running sandbox can sleep');
    const driver = this.driver();
    const mount = this.runtime.mount ?? this.config.mount;
    const canSave = driver.features.saveWithShare[mount];
    const stayPaused = async (why: string): Promise<never> => {
      this.sleepRefusedAt = Date.now();
      if (this.runtime.state === 'running') await this.pause();
      this.setState('paused', { warmNote: `cannot sleep: ${why}` });
      throw conflict(`sandbox ${this.name} cannot be saved to disk now: ${why}`, 'it stays paused (no CPU) and wakes on the next connection');
    };
    if (!driver.features.snapshots) return stayPaused(`${driver.features.name} cannot save VMs on this host`);
    if (canSave === 'never') return stayPaused(`${driver.features.version} cannot save a VM with a ${mount} share (${driver.features.upgradeNote})`);
    const spec = this.runtime.spec;
    if (!spec) return stayPaused('coved does not know the spec this VM runs from (it was started by an older coved)');
    if (st === 'paused') await this.resume();
    const link = this.link;
    if (link) await link.waitUp(this.deps.timeouts.handshakeMs, 'the guest agent').catch(() => undefined);
    if (!link?.isUp) return stayPaused('the agent link is down');
    const t0 = Date.now();
    const prep = await link.control({ op: 'suspend', unmount: canSave === 'unmounted' }, 60_000);
    if (!prep.ok) return stayPaused(prep.busy?.length ? `the shared folder is in use in the guest: ${prep.busy.join('; ')}` : prep.error);
    await driver.pause(this.dir);
    const blockers = await driver.saveBlockers(this.dir);
    if (blockers.length > 0) {
      await driver.resume(this.dir);
      await this.guestResume(true).catch((e: unknown) => this.log(`remount after a refused save: ${messageOf(e)}`));
      return stayPaused(blockers.join('; '));
    }
    const tmp = this.file('sleepState');
    const saved = await driver.save(this.dir, tmp, { skipSharedMemory: false });
    const manifest: SleepManifest = { version: 1, savedAt: new Date().toISOString(), sha256: await sha256File(tmp), bytes: saved.bytes, hypervisor: driver.features.version, spec };
    writeJsonAtomic(this.file('sleepManifest'), manifest);
    this.ending = true;
    try {
      this.link?.close();
      this.pool?.stop();
      this.data?.close();
      await driver.stop(this.dir, { timeoutMs: 0 });
      this.dockerReady = false;
      const asleepPorts = (this.ports?.list() ?? []).filter((p) => p.origin === 'auto' && p.error === undefined).map((p) => p.hostPort);
      this.setState('asleep', { pids: { qemu: null, virtiofsd: null, passt: null }, warmNote: undefined, asleepPorts });
    } finally {
      this.ending = false;
    }
    this.log(`asleep: saved ${(saved.bytes / 1024 / 1024).toFixed(0)} MiB in ${saved.seconds.toFixed(2)} s (${ms(t0)} ms in all)`);
  }

  /** Restores an asleep sandbox exactly as it was saved. */
  private async wake(accel: AccelResult, onStep: (step: string, message: string, fraction?: number) => void): Promise<void> {
    const started = Date.now();
    const driver = this.deps.driver(accel.accel);
    const m = readJson<SleepManifest>(this.file('sleepManifest'));
    if (!m || !fs.existsSync(this.file('sleepState'))) throw new Error('its saved state is missing');
    if (m.hypervisor !== driver.features.version) throw new Error(`it was saved by ${m.hypervisor}, and this host now runs ${driver.features.version}`);
    if (m.spec.accel !== accel.accel) throw new Error(`it was saved under ${m.spec.accel.toUpperCase()}, and this host now uses ${accel.accel.toUpperCase()}`);
    if (m.spec.memoryFile && !fs.existsSync(m.spec.memoryFile.path)) throw new Error('the template it was made from is gone');
    if (!fs.existsSync(path.join(this.imageDir, IMAGE.baseDisk))) throw new Error('its image is gone');
    onStep('wake', 'restoring the VM from disk', 0.3);
    fs.appendFileSync(this.file('consoleLog'), `cove: waking from disk (saved ${m.savedAt}) at ${new Date().toISOString()}\n`, { mode: 0o600 });
    this.dockerReady = false;
    this.setState('starting', { accel: accel.accel, startedAt: new Date().toISOString(), spec: m.spec, pending: 'wake' });
    // The checksum is read while qemu loads the same file; the VM only runs once both agree.
    const checked = sha256File(this.file('sleepState'));
    checked.catch(() => undefined); // Awaited below; a restore that fails first must not leave it unhandled.
    const damaged = new Error('its saved state is damaged (checksum mismatch)');
    let pids: Awaited<ReturnType<Driver['restore']>>;
    try {
      pids = await driver.restore(m.spec, {
        stateFile: this.file('sleepState'),
        skipSharedMemory: false,
        timeoutMs: 120_000,
        beforeRun: async () => {
          if ((await checked) !== m.sha256) throw damaged;
        },
      });
    } catch (e) {
      // qemu may trip over a damaged state before the checksum is done: name the cause.
      if ((await checked.catch(() => null)) !== m.sha256) throw damaged;
      throw e;
    }
    const tRestored = Date.now();
    this.setState('starting', { pids });
    await this.attach();
    await this.requireLink().waitUp(this.deps.timeouts.handshakeMs, 'the woken guest agent');
    const tUp = Date.now();
    await this.guestResume(driver.features.saveWithShare[this.runtime.mount ?? '9p'] === 'unmounted');
    const tResumed = Date.now();
    await this.waitDockerReady(60_000, Date.now());
    this.log(`woke from disk: restore ${tRestored - started} ms, agent ${tUp - tRestored} ms, resume ${tResumed - tUp} ms, dockerd ${ms(tResumed)} ms`);
    this.dropSleepState();
    this.lastActive = Date.now();
    this.setState('running', { bootSeconds: Math.round(ms(started) / 100) / 10, bootKind: 'wake', pending: undefined, warmNote: undefined, asleepPorts: undefined });
    onStep('ready', 'dockerd is ready', 1);
  }

  private dropSleepState(): void {
    fs.rmSync(this.file('sleepManifest'), { force: true });
    fs.rmSync(this.file('sleepState'), { force: true });
  }

  /** Drops coved's side (link, forwards, monitor) without touching the VM. */
  async detach(): Promise<void> {
    if (this.monitor) clearInterval(this.monitor);
    this.monitor = null;
    this.link?.close();
    this.link = null;
    this.pool?.stop();
    this.pool = null;
    this.data?.close();
    this.data = null;
    await this.ports?.closeAll();
    this.ports = null;
    this.dockerReady = false;
    this.nicReady = false;
  }

  /** Kills qemu and its helpers at once. */
  private async kill(): Promise<void> {
    await this.detach();
    await this.driver().stop(this.dir, { timeoutMs: 0 });
  }

  async stop(force: boolean): Promise<void> {
    const st = this.runtime.state;
    if (st === 'stopped') return;
    if (st === 'asleep') {
      // Its saved state is dropped: the next start boots, like after any stop.
      this.dropSleepState();
      await this.detach();
      this.setState('stopped', { pids: { qemu: null, virtiofsd: null, passt: null } });
      return;
    }
    if (!this.alive()) {
      await this.detach();
      await this.driver().stop(this.dir, { timeoutMs: 0 });
      this.setState('stopped', { pids: { qemu: null, virtiofsd: null, passt: null } });
      return;
    }
    if (st === 'paused') await this.driver().resume(this.dir).catch(() => undefined);
    this.link?.release();
    this.setState('stopping');
    const link = this.link;
    if (!force && link) {
      // A link that is still connecting (coved just restarted) gets its chance: a clean shutdown
      // needs it, and pulling the power is the last resort.
      await link.waitUp(this.deps.timeouts.handshakeMs, 'the guest agent').catch(() => undefined);
    }
    if (!force && link?.isUp) {
      // The link drops as the guest powers off, so the command's own end is not awaited.
      link.exec(GUEST.poweroff, 5000).catch(() => undefined);
      const vfsDead = this.runtime.pids.virtiofsd !== null && !processAlive(this.runtime.pids.virtiofsd, this.dir);
      const wait = vfsDead ? Math.min(20_000, this.deps.timeouts.stopMs) : this.deps.timeouts.stopMs;
      const off = await waitFor('the guest to power off', wait, () => !this.alive(), 100).catch(() => false);
      if (!off) this.log('the guest did not power off in time; quitting qemu');
    }
    await this.detach();
    await this.driver().stop(this.dir, { timeoutMs: 10_000 });
    this.setState('stopped', { pids: { qemu: null, virtiofsd: null, passt: null } });
  }

  async ensureContext(): Promise<void> {
    this.contextName = await this.deps.ensureContext(this.name, this.file('dockerSock'));
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
    if (st === 'stopped' || st === 'crashed' || st === 'asleep') {
      await this.openSockets();
      if (st === 'asleep') {
        // Its ports keep listening across a coved restart, so a connection to one still wakes it.
        this.ensurePorts();
        for (const port of this.runtime.asleepPorts ?? []) this.ports?.addAuto({ proto: 'tcp', address: '0.0.0.0', port });
      }
      await this.ensureContext().catch((e: unknown) => this.log(`context: ${messageOf(e)}`));
      return;
    }
    if (this.runtime.pending) {
      // coved died between a restore and the guest becoming this sandbox: that VM (if qemu got
      // that far) cannot be trusted (a template identity, or a clock and mounts not set), so it goes.
      const pending = this.runtime.pending;
      this.log(`a ${pending === 'rebirth' ? 'warm start' : 'wake'} was interrupted by a coved restart; stopping that VM`);
      await this.driver().stop(this.dir, { timeoutMs: 0 });
      await this.openSockets();
      if (pending === 'wake' && fs.existsSync(this.file('sleepManifest'))) {
        this.setState('asleep', { pids: { qemu: null, virtiofsd: null, passt: null }, pending: undefined });
        this.ensurePorts();
      } else {
        this.setState('stopped', { pids: { qemu: null, virtiofsd: null, passt: null }, pending: undefined, bootKind: pending === 'rebirth' ? null : this.runtime.bootKind });
      }
      await this.ensureContext().catch((e: unknown) => this.log(`context: ${messageOf(e)}`));
      return;
    }
    if (this.alive()) {
      this.log(`re-attaching to the running VM (qemu pid ${this.runtime.pids.qemu})`);
      if (st === 'paused') await this.driver().resume(this.dir).catch(() => undefined);
      await this.attach();
      if (st === 'stopping') await this.stop(false);
      else this.setState('running');
      return;
    }
    await this.openSockets();
    await this.driver().stop(this.dir, { timeoutMs: 0 });
    this.setState(st === 'stopping' ? 'stopped' : 'crashed', {
      pids: { qemu: null, virtiofsd: null, passt: null },
      pending: undefined,
      ...(st === 'stopping' ? {} : { problem: this.exitReason('the VM exited while coved was not running'), consoleTail: tailFile(this.file('consoleLog')) }),
    });
  }

  /**
   * The port forwards, made once and kept while the sandbox is paused or asleep: a connection to a
   * forwarded port wakes the sandbox before its channel opens.
   */
  private ensurePorts(): void {
    if (this.ports) return;
    const opener = {
      forwardTcp: async (host: string, port: number, everyAddress: boolean) => {
        await this.ensureAwake();
        if (!this.link) throw new Error(`sandbox ${this.name} is ${this.runtime.state}`);
        const qemu = this.runtime.pids.qemu;
        if (everyAddress && this.nicReady && qemu) {
          try {
            return this.track(await this.nic.connect(qemu, port));
          } catch (e) {
            if (!this.nicFailed) this.log(`forwarding NIC: guest port ${port}: ${messageOf(e)}; using the data channel`);
            this.nicFailed = true;
          }
        }
        const viaData = net.isIP(host) ? await this.openData({ kind: 'tcp', host, port }) : null;
        if (viaData) return viaData;
        return this.track(await this.link.forwardTcp(host, port));
      },
      release: (port: number) => this.nic.release(port),
    };
    this.ports = new PortForwarder(opener, (port, action) => this.emit('port', port, action), (m) => this.log(m));
    for (const p of this.config.published) void this.ports.add(p.hostPort, p.guestPort, 'manual');
  }
}

/** A boot stopped because the guest kernel reported a hung task (boot-progress.ts). */
class BootStalled extends Error {
  constructor(readonly stall: BootStall) {
    super(stallText(stall));
  }
}
