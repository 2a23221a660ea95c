// The service itself: every sandbox of this user, the image, the Docker contexts, and the
// notifications that go out to every connected client. server.ts puts it on the wire.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CoveError, conflict, invalidInput, messageOf, notFound } from '../../contract/errors';
import { checkName, nameForFolder } from '../../contract/names';
import {
  ErrorCodes,
  type DoctorResult,
  type ImageBuildResult,
  type ImageInfo,
  type PortForward,
  type ProgressEvent,
  type SandboxInfo,
} from '../../contract/protocol';
import { VM, imagesDir, vmDir, vmsDir } from '../../contract/layout';
import { ensureContext, findDocker, removeContext } from './context';
import { readJson } from './files';
import { generateKeys, writeSshConfig } from './keys';
import { Sandbox, type IdlePolicy, type SandboxConfig, type SandboxDeps, type Timeouts } from './sandbox';
import { Templates, type MachineShape, type Template } from './templates';
import { asParams, checkWorkspace, optBool, optEnum, optInt, optPorts, reqInt, type Params } from './validate';
import { QemuDriver, createOverlay, type Accel, type Driver } from '../driver';
import * as vm from './vm';

export type { Timeouts } from './sandbox';

export interface Listener {
  progress(e: ProgressEvent): void;
  sandboxChanged(info: SandboxInfo): void;
  sandboxRemoved(name: string): void;
  port(name: string, port: PortForward, action: 'forwarded' | 'removed' | 'failed'): void;
}

const envMs = (key: string, fallback: number) => {
  const v = Number(process.env[key]);
  return Number.isFinite(v) && v > 0 ? v * 1000 : fallback;
};
/** Seconds from the environment where 0 means never; `fallback` in ms. */
const envMsOrNever = (key: string, fallback: number) => {
  const raw = process.env[key];
  if (raw === undefined || raw.trim() === '') return fallback;
  const v = Number(raw);
  return Number.isFinite(v) && v >= 0 ? v * 1000 : fallback;
};

/** Whether new sandboxes start from a warm-start template (COVE_WARM=0 turns it off). */
const warmEnabled = () => process.env.COVE_WARM !== '0';

export class Coved {
  readonly imagesDir: string;
  readonly timeouts: Timeouts = {
    bootTcgMs: envMs('COVE_BOOT_TIMEOUT', 480_000),
    bootKvmMs: envMs('COVE_BOOT_TIMEOUT', 120_000),
    handshakeMs: 60_000,
    socketWaitMs: envMs('COVE_SOCKET_WAIT', 120_000),
    stopMs: 60_000,
  };
  /**
   * An idle sandbox (no client connection, a quiet guest) is paused after COVE_PAUSE_AFTER seconds
   * and saved to disk COVE_SLEEP_AFTER seconds later; 0 turns either off.
   */
  readonly idle: IdlePolicy = {
    pauseAfterMs: envMsOrNever('COVE_PAUSE_AFTER', 300_000),
    sleepAfterMs: envMsOrNever('COVE_SLEEP_AFTER', 1_800_000),
    quietCpu: Number(process.env.COVE_QUIET_CPU) > 0 ? Number(process.env.COVE_QUIET_CPU) : 0.25,
  };
  private readonly sandboxes = new Map<string, Sandbox>();
  /** Creations in flight, by name, and the name each workspace is being created under. */
  private readonly creating = new Map<string, Promise<Sandbox>>();
  private readonly creatingFor = new Map<string, string>();
  private readonly drivers = new Map<Accel, Driver>();
  readonly templates: Templates;
  readonly listeners = new Set<Listener>();
  private dockerBin: string | null = null;
  private accelResult: Promise<vm.AccelResult> | null = null;
  private imageBuild: Promise<ImageBuildResult> | null = null;

  constructor(
    readonly home: string,
    readonly log: (msg: string) => void,
  ) {
    this.imagesDir = imagesDir(home);
    this.templates = new Templates({ home, log, bootTimeoutMs: this.timeouts.bootTcgMs });
  }

  /** One driver per accelerator; a Firecracker or Cloud Hypervisor driver would be chosen here. */
  driver(accel: Accel): Driver {
    let d = this.drivers.get(accel);
    if (!d) {
      d = new QemuDriver(accel);
      this.drivers.set(accel, d);
    }
    return d;
  }

  private deps(): SandboxDeps {
    return {
      home: this.home,
      imagesDir: this.imagesDir,
      timeouts: this.timeouts,
      idle: this.idle,
      log: this.log,
      accel: (imageDir) => this.accel(imageDir),
      driver: (accel) => this.driver(accel),
      ensureContext: (name, sock) => this.ensureContext(name, sock),
      templates: this.templates,
    };
  }

  /** A sandbox wired to the notifications. */
  private adopt(config: SandboxConfig): Sandbox {
    const sb = new Sandbox(this.deps(), config);
    sb.on('changed', () => this.sandboxChanged(sb));
    sb.on('port', (port: PortForward, action: 'forwarded' | 'removed' | 'failed') => this.portChanged(sb, port, action));
    return sb;
  }

  /**
   * Loads every sandbox on disk. Re-attaching to the running ones and re-creating sockets and
   * contexts runs in the background (`recovered`), each sandbox's in its own queue, so coved
   * serves clients at once and a request for one sandbox waits only for that sandbox.
   */
  async init(): Promise<void> {
    fs.mkdirSync(vmsDir(this.home), { recursive: true, mode: 0o700 });
    const loaded: Sandbox[] = [];
    for (const entry of fs.readdirSync(vmsDir(this.home))) {
      const dir = vmDir(entry, this.home);
      const config = readJson<SandboxConfig>(path.join(dir, VM.config));
      if (!config) {
        // config.json is written last at create: a folder without it was never a complete sandbox.
        this.log(`removing ${dir}: a sandbox creation that did not finish`);
        fs.rmSync(dir, { recursive: true, force: true });
        continue;
      }
      const sb = this.adopt(config);
      this.sandboxes.set(config.name, sb);
      loaded.push(sb);
    }
    this.recovered = (async () => {
      this.dockerBin = await findDocker();
      if (!this.dockerBin) this.log('the docker CLI was not found: Docker contexts will not be created');
      await Promise.all(
        loaded.map((sb) =>
          sb.serialize(() => sb.recover()).catch((e) => this.log(`[${sb.name}] recover failed: ${messageOf(e)}`)),
        ),
      );
    })();
  }

  /** Resolves when every sandbox found at start has been recovered. */
  recovered: Promise<void> = Promise.resolve();

  async shutdown(): Promise<void> {
    // VMs outlive coved on purpose; only coved's side is let go.
    for (const sb of this.sandboxes.values()) {
      await sb.detach();
      await sb.closeSockets();
    }
  }

  // ---- notifications ----------------------------------------------------------------------

  sandboxChanged(sb: Sandbox): void {
    const info = sb.info();
    for (const l of this.listeners) l.sandboxChanged(info);
  }

  portChanged(sb: Sandbox, port: PortForward, action: 'forwarded' | 'removed' | 'failed'): void {
    for (const l of this.listeners) l.port(sb.name, port, action);
  }

  private progress(e: ProgressEvent): void {
    for (const l of this.listeners) l.progress(e);
  }

  // ---- shared resources ---------------------------------------------------------------------

  accel(imageDir: string): Promise<vm.AccelResult> {
    if (!this.accelResult) {
      this.accelResult = vm.detectAccel(this.home, imageDir, (m) => this.log(m));
      this.accelResult.catch(() => (this.accelResult = null));
    }
    return this.accelResult;
  }

  async ensureContext(name: string, dockerSock: string): Promise<string | null> {
    if (!this.dockerBin) return null;
    try {
      return await ensureContext(this.dockerBin, name, `unix://${dockerSock}`);
    } catch (e) {
      this.log(`[${name}] ${messageOf(e)}`);
      return null;
    }
  }

  /**
   * Builds the image when there is none (or `force`); concurrent callers share one build. An
   * explicit build (`cove image build`) checks a cached image's checksums; `up` checks sizes.
   */
  buildImage(force: boolean, subject = 'image', fullVerify = subject === 'image', token?: string): Promise<ImageBuildResult> {
    if (!this.imageBuild) {
      this.imageBuild = vm
        .buildImage(this.home, force, fullVerify, (step, message, fraction) => this.progress({ subject, operation: 'build', step, message, fraction, token }))
        .finally(() => (this.imageBuild = null));
    }
    return this.imageBuild;
  }

  listImages(): ImageInfo[] {
    return vm.listImages(this.home);
  }

  /** Removes every image no sandbox uses, keeping the newest one (what the next `up` uses). */
  async pruneImages(): Promise<string[]> {
    if (this.imageBuild) throw conflict('an image build is running', 'prune again when it has finished');
    const used = new Set([...this.sandboxes.values()].map((s) => s.config.image));
    const removed: string[] = [];
    for (const img of this.listImages().slice(1)) {
      if (used.has(path.basename(img.dir))) continue;
      fs.rmSync(img.dir, { recursive: true, force: true });
      removed.push(img.dir);
    }
    return removed;
  }

  // ---- requests -----------------------------------------------------------------------------

  list(): SandboxInfo[] {
    return [...this.sandboxes.values()].map((s) => s.info()).sort((a, b) => a.name.localeCompare(b.name));
  }

  get(nameValue: unknown): Sandbox {
    const name = checkName(nameValue);
    const sb = this.sandboxes.get(name);
    if (!sb) throw notFound(`there is no sandbox named ${name}`, 'list them with `cove ls`, or create it with `cove up DIR --name ' + name + '`');
    return sb;
  }

  async up(raw: unknown): Promise<SandboxInfo> {
    const p = asParams(raw);
    if (typeof p.dir !== 'string') throw invalidInput('"dir" is required and must be a string', 'pass the folder to open');
    const workspace = checkWorkspace(p.dir, this.home);
    const opts = this.sizeOptions(p);
    let name: string;
    if (p.name !== undefined && p.name !== null) {
      name = checkName(p.name);
    } else {
      // A sandbox for this folder, made or being made, is the one: two `up` requests for the same
      // folder (the extension sends no name) must not make two sandboxes.
      const same = [...this.sandboxes.values()].find((s) => s.config.workspace === workspace);
      name = same ? same.name : (this.creatingFor.get(workspace) ?? this.freeNameFor(workspace));
    }
    let sb = this.sandboxes.get(name);
    if (sb && sb.config.workspace !== workspace) {
      throw conflict(`sandbox ${name} already exists for ${sb.config.workspace}`, `choose another --name, or remove it with \`cove rm ${name}\``);
    }
    const token = typeof p.progressToken === 'string' ? p.progressToken.slice(0, 200) : undefined;
    if (!sb) sb = await this.create(name, workspace, opts, token);
    const target = sb;
    await target.serialize(async () => {
      if (target.runtime.state === 'running') return;
      await target.start((step, message, fraction) => this.progress({ subject: name, operation: 'up', step, message, fraction, token }));
    });
    return target.info();
  }

  private sizeOptions(p: Params) {
    const hostMiB = Math.floor(os.totalmem() / 1024 / 1024);
    return {
      cpus: optInt(p, 'cpus', 1, Math.max(1, os.cpus().length)),
      memoryMiB: optInt(p, 'memoryMiB', 512, hostMiB, ' MiB'),
      diskGiB: optInt(p, 'diskGiB', 4, 4096, ' GiB'),
      mount: optEnum(p, 'mount', ['virtiofs', '9p'] as const),
      readonly: optBool(p, 'readonly'),
      allowHostPorts: optPorts(p, 'allowHostPorts'),
      keepAwake: optBool(p, 'keepAwake'),
    };
  }

  /** The folder's own name if free, else that name with a short hash of the path. */
  private freeNameFor(workspace: string): string {
    const base = nameForFolder(workspace);
    if (!this.sandboxes.has(base) && !this.creating.has(base)) return base;
    let h = 0;
    for (const c of workspace) h = (h * 31 + c.charCodeAt(0)) >>> 0;
    return `${base.slice(0, 33)}-${h.toString(16).padStart(6, '0').slice(0, 6)}`;
  }

  private create(name: string, workspace: string, opts: ReturnType<Coved['sizeOptions']>, token?: string): Promise<Sandbox> {
    const pending = this.creating.get(name);
    if (pending) return pending;
    const made = this.createNow(name, workspace, opts, token).finally(() => {
      this.creating.delete(name);
      this.creatingFor.delete(workspace);
    });
    this.creating.set(name, made);
    this.creatingFor.set(workspace, name);
    return made;
  }

  private async createNow(name: string, workspace: string, opts: ReturnType<Coved['sizeOptions']>, token?: string): Promise<Sandbox> {
    const progress = (step: string, message: string, fraction?: number) => this.progress({ subject: name, operation: 'up', step, message, fraction, token });
    progress('image', 'looking for the Docker tier image', 0);
    const image = (await this.buildImage(false, name, false, token)).image;
    const cpus = opts.cpus ?? Math.min(2, os.cpus().length);
    const memoryMiB = opts.memoryMiB ?? 2048;
    const diskGiB = opts.diskGiB ?? 20;
    const warm = await this.templateFor(image.dir, { cpus, memoryMiB, diskGiB, network: vm.networkFor() }, opts.mount, progress);
    const dir = vmDir(name, this.home);
    fs.mkdirSync(vmsDir(this.home), { recursive: true, mode: 0o700 });
    try {
      fs.mkdirSync(dir, { mode: 0o700 });
    } catch (e) {
      throw conflict(`the folder ${dir} already exists (${messageOf(e)})`, `remove it if it is left over, or pick another name`);
    }
    try {
      progress('disk', 'creating the sandbox disk', 0.02);
      const config: SandboxConfig = {
        version: 1,
        name,
        workspace,
        // A sandbox made from a template shares its folder over 9p: QEMU 7.2 can save that.
        mount: warm.template ? '9p' : (opts.mount ?? 'virtiofs'),
        readonly: opts.readonly ?? false,
        cpus,
        memoryMiB,
        diskGiB,
        ...(warm.template ? { template: warm.template.id } : {}),
        ...(opts.keepAwake ? { keepAwake: true } : {}),
        image: path.basename(image.dir),
        baseSha256: vm.baseSha256(image.dir),
        createdAt: new Date().toISOString(),
        published: [],
        allowHostPorts: opts.allowHostPorts ?? [],
      };
      generateKeys(dir, name);
      // coved's own entry file is the proxy; ELECTRON_RUN_AS_NODE lets an editor's runtime run it.
      const entry = require.main?.filename ?? path.join(__dirname, 'main.js');
      writeSshConfig(dir, name, `env ELECTRON_RUN_AS_NODE=1 COVE_HOME="${this.home}" "${process.execPath}" "${entry}" ssh-proxy ${name}`);
      if (warm.template) await createOverlay(warm.template.file('disk'), path.join(dir, VM.disk), config.diskGiB * 1024 ** 3, 'qcow2');
      else await vm.createDisk(image.dir, path.join(dir, VM.disk), config.diskGiB);
      const sb = this.adopt(config);
      if (warm.note) sb.runtime.warmNote = warm.note;
      sb.saveConfig(); // Written last: its presence marks a complete sandbox.
      this.sandboxes.set(name, sb);
      await sb.openSockets();
      await sb.ensureContext();
      this.sandboxChanged(sb);
      return sb;
    } catch (e) {
      this.sandboxes.delete(name);
      fs.rmSync(dir, { recursive: true, force: true });
      if ((e as NodeJS.ErrnoException).code === 'ENOSPC' || /no space left on device/i.test(messageOf(e))) {
        throw new CoveError(ErrorCodes.noSpace, `the disk holding ${this.home} is full: sandbox ${name} was not created`, 'free some space and run `cove up` again');
      }
      throw e;
    }
  }

  /**
   * The warm-start template for a new sandbox of this shape, made now if there is none (the first
   * sandbox of a new image or shape waits for it, about as long as a cold boot); or null with a
   * one-line reason, and the sandbox boots cold.
   */
  private async templateFor(
    imageDir: string,
    shape: MachineShape,
    mount: 'virtiofs' | '9p' | undefined,
    progress: (step: string, message: string, fraction?: number) => void,
  ): Promise<{ template: Template | null; note?: string }> {
    if (!warmEnabled()) return { template: null, note: 'warm start is off (COVE_WARM=0)' };
    const accel = await this.accel(imageDir);
    const driver = this.driver(accel.accel);
    if (!driver.features.snapshots) return { template: null, note: `${driver.features.name} cannot save VMs on this host` };
    if (mount === 'virtiofs' && driver.features.saveWithShare.virtiofs === 'never') {
      return { template: null, note: `virtio-fs was asked for, and ${driver.features.version} cannot save it: booting cold` };
    }
    try {
      return { template: await this.templates.ensure(imageDir, driver, accel, shape, (step, message, fraction) => progress(step, message, fraction)) };
    } catch (e) {
      this.log(`warm start unavailable: ${messageOf(e)}`);
      return { template: null, note: messageOf(e).split('\n')[0] };
    }
  }

  async start(raw: unknown): Promise<SandboxInfo> {
    const sb = this.get(asParams(raw).name);
    await sb.serialize(() => sb.start((step, message, fraction) => this.progress({ subject: sb.name, operation: 'start', step, message, fraction })));
    return sb.info();
  }

  async stop(raw: unknown): Promise<SandboxInfo> {
    const p = asParams(raw);
    const sb = this.get(p.name);
    const force = optBool(p, 'force') ?? false;
    this.progress({ subject: sb.name, operation: 'stop', step: 'stop', message: 'stopping the VM' });
    await sb.serialize(() => sb.stop(force));
    return sb.info();
  }

  async sleep(raw: unknown): Promise<SandboxInfo> {
    const sb = this.get(asParams(raw).name);
    await sb.serialize(() => sb.sleep());
    return sb.info();
  }

  async pause(raw: unknown): Promise<SandboxInfo> {
    const sb = this.get(asParams(raw).name);
    await sb.serialize(async () => {
      if (sb.runtime.state !== 'running') throw conflict(`sandbox ${sb.name} is ${sb.runtime.state}`, 'only a running sandbox can be paused');
      await sb.pause();
    });
    return sb.info();
  }

  async remove(raw: unknown): Promise<void> {
    const p = asParams(raw);
    const sb = this.get(p.name);
    const force = optBool(p, 'force') ?? false;
    await sb.serialize(async () => {
      const st = sb.runtime.state;
      if ((st === 'running' || st === 'starting' || st === 'stopping') && !force) {
        throw conflict(`sandbox ${sb.name} is ${st}`, `stop it first with \`cove stop ${sb.name}\`, or remove it anyway with \`cove rm --force ${sb.name}\``);
      }
      await sb.stop(force);
      await sb.closeSockets();
      if (this.dockerBin) await removeContext(this.dockerBin, sb.name);
      // Only the sandbox's own folder goes; the name was checked, so this is inside vms/.
      const dir = vmDir(sb.name, this.home);
      if (path.dirname(dir) !== vmsDir(this.home)) throw new Error(`refusing to remove ${dir}`);
      fs.rmSync(dir, { recursive: true, force: true });
      this.sandboxes.delete(sb.name);
    });
    for (const l of this.listeners) l.sandboxRemoved(sb.name);
  }

  async publish(raw: unknown): Promise<PortForward> {
    const p = asParams(raw);
    const sb = this.get(p.name);
    const hostPort = reqInt(p, 'hostPort', 1, 65535);
    const guestPort = reqInt(p, 'guestPort', 1, 65535);
    return sb.publish(hostPort, guestPort);
  }

  async unpublish(raw: unknown): Promise<void> {
    const p = asParams(raw);
    const sb = this.get(p.name);
    await sb.unpublish(reqInt(p, 'hostPort', 1, 65535));
  }

  async doctor(): Promise<DoctorResult> {
    const checks = await vm.hostChecks(this.home);
    checks.push({
      name: 'docker CLI',
      ok: this.dockerBin !== null,
      detail: this.dockerBin ? `found (${this.dockerBin}); contexts are created as cove-<name>` : 'not found',
      hint: this.dockerBin ? undefined : 'install the docker CLI (Debian: docker.io or docker-cli) to get Docker contexts; DOCKER_HOST=unix://…/docker.sock works without it',
    });
    if (this.dockerBin) checks.push(...(await vm.pluginChecks(this.dockerBin)));
    const image = this.listImages()[0];
    let accel: DoctorResult['accel'] = null;
    let accelDetail = 'no image built yet: the KVM probe runs at the first boot';
    if (image) {
      try {
        const r = await this.accel(image.dir);
        accel = r.accel;
        accelDetail = r.reason;
      } catch (e) {
        accelDetail = messageOf(e);
      }
    }
    return { checks, accel, accelDetail };
  }
}
