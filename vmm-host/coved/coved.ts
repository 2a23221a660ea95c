// The service's core: the registry of this user's sandboxes (loaded at start, recovered in the
// background), what they share (the image build, the accelerator, one driver per accelerator, the
// warm-start templates, Docker contexts) and the notifications that go out to every client. The
// requests are handled per area in handlers/; server.ts puts them on the wire.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { messageOf, notFound } from '../../contract/errors';
import { checkName } from '../../contract/names';
import type { ImageBuildResult, PortForward, ProgressEvent, SandboxInfo } from '../../contract/protocol';
import { VM, imagesDir, vmDir, vmsDir } from '../../contract/layout';
import { QemuDriver, type Accel, type Driver } from '../driver';
import { ensureContext, findDocker } from './context';
import { envPositive, envSecondsMs, envSecondsOrNeverMs } from './env-parse';
import { readJson } from './files';
import { ImageBuilds } from '../image/builds';
import * as images from './images';
import { Sandbox, type IdlePolicy, type SandboxConfig, type SandboxDeps, type Timeouts } from './sandbox';
import { Templates } from './templates';

export type { Timeouts } from './sandbox';

export interface Listener {
  progress(e: ProgressEvent): void;
  sandboxChanged(info: SandboxInfo): void;
  sandboxRemoved(name: string): void;
  port(name: string, port: PortForward, action: 'forwarded' | 'removed' | 'failed'): void;
}

/** How long coved waits for a guest, from COVE_BOOT_TIMEOUT and COVE_SOCKET_WAIT (seconds). */
export function timeoutsFromEnv(env: NodeJS.ProcessEnv = process.env): Timeouts {
  return {
    bootTcgMs: envSecondsMs(env, 'COVE_BOOT_TIMEOUT', 480_000),
    bootKvmMs: envSecondsMs(env, 'COVE_BOOT_TIMEOUT', 120_000),
    handshakeMs: 60_000,
    socketWaitMs: envSecondsMs(env, 'COVE_SOCKET_WAIT', 120_000),
    stopMs: 60_000,
  };
}

/**
 * An idle sandbox (no client connection, a quiet guest: qemu under COVE_QUIET_CPU of one CPU) is
 * paused after COVE_PAUSE_AFTER seconds and saved to disk COVE_SLEEP_AFTER seconds later; 0 turns
 * either off.
 */
export function idlePolicyFromEnv(env: NodeJS.ProcessEnv = process.env): IdlePolicy {
  return {
    pauseAfterMs: envSecondsOrNeverMs(env, 'COVE_PAUSE_AFTER', 300_000),
    sleepAfterMs: envSecondsOrNeverMs(env, 'COVE_SLEEP_AFTER', 1_800_000),
    quietCpu: envPositive(env, 'COVE_QUIET_CPU', 0.25, 64, 'a share of one CPU greater than 0, such as 0.25'),
  };
}


export class Coved {
  readonly imagesDir: string;
  readonly timeouts: Timeouts = timeoutsFromEnv();
  readonly idle: IdlePolicy = idlePolicyFromEnv();
  private readonly sandboxes = new Map<string, Sandbox>();
  /** Creations in flight, by name, and the name each workspace is being created under. */
  readonly creating = new Map<string, Promise<Sandbox>>();
  readonly creatingFor = new Map<string, string>();
  private readonly drivers = new Map<Accel, Driver>();
  readonly templates: Templates;
  readonly listeners = new Set<Listener>();
  dockerBin: string | null = null;
  private accelResult: Promise<images.AccelResult> | null = null;
  /** One image build at a time: callers join it; a --force during a build runs right after it. */
  private readonly imageBuilds = new ImageBuilds<ImageBuildResult>((force, fullVerify, onProgress) => images.buildImage(this.home, force, fullVerify, onProgress));

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
  adopt(config: SandboxConfig): Sandbox {
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
          sb.serialize(() => sb.recover()).catch((e: unknown) => this.log(`[${sb.name}] recover failed: ${messageOf(e)}`)),
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

  progress(e: ProgressEvent): void {
    for (const l of this.listeners) l.progress(e);
  }

  // ---- shared resources ---------------------------------------------------------------------

  accel(imageDir: string): Promise<images.AccelResult> {
    if (!this.accelResult) {
      this.accelResult = images.detectAccel(this.home, imageDir, (m) => this.log(m));
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

  // ---- the registry ---------------------------------------------------------------------------

  all(): Sandbox[] {
    return [...this.sandboxes.values()];
  }

  has(name: string): boolean {
    return this.sandboxes.has(name);
  }

  add(sb: Sandbox): void {
    this.sandboxes.set(sb.name, sb);
  }

  delete(name: string): void {
    this.sandboxes.delete(name);
  }

  sandboxRemoved(name: string): void {
    for (const l of this.listeners) l.sandboxRemoved(name);
  }

  /** Builds the image when there is none (or `force`); concurrent callers share one build. */
  buildImage(force: boolean, subject = 'image', fullVerify = subject === 'image', token?: string): Promise<ImageBuildResult> {
    return this.imageBuilds.run({ force, fullVerify, onProgress: (step, message, fraction) => this.progress({ subject, operation: 'build', step, message, fraction, token }) });
  }

  get imageBuilding(): boolean {
    return this.imageBuilds.busy;
  }


  get(nameValue: unknown): Sandbox {
    const name = checkName(nameValue);
    const sb = this.sandboxes.get(name);
    if (!sb) throw notFound(`there is no sandbox named ${name}`, 'list them with `cove ls`, or create it with `cove up DIR --name ' + name + '`');
    return sb;
  }

}
