// Warm-start templates (docs/warm-start.md): for each image and machine shape, one VM booted to
// docker-ready with a template identity and no workspace mounted, saved once, then restored by
// every new sandbox of that shape. Guest RAM lives in a file that clones map copy-on-write, so the
// saved state is small and a restore loads pages on demand. A template folder is never written
// after it is complete; a template that failed a restore is marked bad and a new one is made.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DEFAULT_NETWORK, writeConfigDisk } from '../../contract/config-disk';
import { HOME, IMAGE, TEMPLATE, VM } from '../../contract/layout';
import { waitFor } from '../../contract/wait';
import { buildQemuArgv, guestAslr, specFromLayout, type AccelResult, type Driver, type VmSpec } from '../driver';
import { watchConsole } from './boot-progress';
import { readJson, tailFile, writeJsonAtomic } from './files';
import { generateKeys, readKeys, type SandboxKeys } from './keys';
import { EMPTY_SLOT, slotShares } from './mounts';

/** What a template is made for: a saved VM only restores into the same shape. */
export interface MachineShape {
  cpus: number;
  memoryMiB: number;
  diskGiB: number;
  network: 'passt' | 'user';
}

export interface TemplateManifest {
  version: 1;
  key: string;
  /** Everything the saved state is bound to; a mismatch means a new template. */
  binding: Record<string, unknown>;
  createdAt: string;
  stateSha256: string;
  stateBytes: number;
  bootSeconds: number;
  saveSeconds: number;
}

export interface Template {
  id: string;
  dir: string;
  manifest: TemplateManifest;
  keys: SandboxKeys;
  file(k: keyof typeof TEMPLATE): string;
}

export interface TemplateDeps {
  home: string;
  log: (msg: string) => void;
  bootTimeoutMs: number;
}

/** The 9p devices' host folder in a template: empty, and never mounted by the template's guest. */
const EMPTY_SHARE = EMPTY_SLOT;

export function sha256File(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    fs.createReadStream(file)
      .on('data', (d) => h.update(d))
      .on('error', reject)
      .on('end', () => resolve(h.digest('hex')));
  });
}

/**
 * The binding of a template: the image, the hypervisor and its version, the accelerator, the shape,
 * and the device layout (qemu's argv with the paths taken out).
 */
export function templateBinding(imageDir: string, driver: Driver, accel: AccelResult, shape: MachineShape): Record<string, unknown> {
  const spec = specFromLayout({
    imageDir: '/IMAGE',
    vmDir: '/VM',
    cpus: shape.cpus,
    memoryMiB: shape.memoryMiB,
    accel: accel.accel,
    tscKhz: accel.tscKhz,
    share: { type: '9p', hostPath: '/SHARE', readonly: false },
    extraShares: slotShares('/VM', [], '/SHARE'),
    network: shape.network,
    memoryFile: { path: '/RAM', shared: true },
    dataPort: true,
    forwardNic: true,
    stdinPort: true,
  });
  return {
    layout: 3,
    image: path.basename(imageDir),
    hypervisor: driver.features.name,
    version: driver.features.version,
    accel: accel.accel,
    tscKhz: accel.tscKhz,
    ...shape,
    argv: buildQemuArgv(spec).join(' '),
  };
}

export function templateKey(binding: Record<string, unknown>): string {
  return createHash('sha256').update(JSON.stringify(binding)).digest('hex').slice(0, 12);
}

export class Templates {
  private readonly making = new Map<string, Promise<Template>>();

  constructor(private readonly deps: TemplateDeps) {}

  private root(imageDir: string): string {
    return path.join(imageDir, IMAGE.templates);
  }

  /** A complete, usable template for this binding, or null. */
  find(imageDir: string, binding: Record<string, unknown>): Template | null {
    const key = templateKey(binding);
    let names: string[];
    try {
      names = fs.readdirSync(this.root(imageDir)).filter((n) => n.startsWith(`${key}-`) && !n.endsWith('.tmp')).sort();
    } catch {
      return null;
    }
    for (const id of names.reverse()) {
      const t = this.open(imageDir, id);
      if (t && !fs.existsSync(t.file('bad')) && JSON.stringify(t.manifest.binding) === JSON.stringify(binding)) return t;
    }
    return null;
  }

  /** Opens a complete template folder by id (used by sandboxes made from it), or null. */
  open(imageDir: string, id: string): Template | null {
    const dir = path.join(this.root(imageDir), id);
    const manifest = readJson<TemplateManifest>(path.join(dir, TEMPLATE.manifest));
    if (!manifest) return null;
    let keys: SandboxKeys;
    try {
      keys = readKeys(dir);
    } catch {
      return null;
    }
    return { id, dir, manifest, keys, file: (k) => path.join(dir, TEMPLATE[k]) };
  }

  /** Marks a template unusable for new sandboxes (a restore from it failed); it stays for its clones. */
  markBad(t: Template, why: string): void {
    try {
      fs.writeFileSync(t.file('bad'), `${new Date().toISOString()} ${why}\n`);
    } catch {
      // A read-only image folder: the next restore fails again and falls back again.
    }
  }

  /** The template for this shape, made now when there is none; concurrent callers share one. */
  ensure(imageDir: string, driver: Driver, accel: AccelResult, shape: MachineShape, onStep: (step: string, message: string, fraction: number) => void): Promise<Template> {
    const binding = templateBinding(imageDir, driver, accel, shape);
    const found = this.find(imageDir, binding);
    if (found) return Promise.resolve(found);
    const key = templateKey(binding);
    let pending = this.making.get(key);
    if (!pending) {
      pending = this.make(imageDir, driver, accel, shape, binding, onStep).finally(() => this.making.delete(key));
      this.making.set(key, pending);
    }
    return pending;
  }

  private async make(
    imageDir: string,
    driver: Driver,
    accel: AccelResult,
    shape: MachineShape,
    binding: Record<string, unknown>,
    onStep: (step: string, message: string, fraction: number) => void,
  ): Promise<Template> {
    const key = templateKey(binding);
    const id = `${key}-${Date.now().toString(36)}`;
    const final = path.join(this.root(imageDir), id);
    const dir = `${final}.tmp`;
    // Sockets go in a short folder: the image folder's path can be too long for a unix socket.
    const run = path.join(this.deps.home, HOME.run, key.slice(0, 8));
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    fs.rmSync(run, { recursive: true, force: true });
    fs.mkdirSync(run, { recursive: true, mode: 0o700 });
    fs.mkdirSync(path.join(dir, EMPTY_SHARE), { mode: 0o700 });
    const log = (m: string) => this.deps.log(`[template ${key}] ${m}`);
    const t0 = Date.now();
    const spec: VmSpec = {
      ...specFromLayout({
        imageDir,
        vmDir: run,
        cpus: shape.cpus,
        memoryMiB: shape.memoryMiB,
        accel: accel.accel,
        tscKhz: accel.tscKhz,
        // Read-only is a property of qemu's 9p server, not of the saved device: a clone sets its own.
        share: { type: '9p', hostPath: path.join(dir, EMPTY_SHARE), readonly: false },
        extraShares: slotShares(run, [], path.join(dir, EMPTY_SHARE)),
        network: shape.network,
        memoryFile: { path: path.join(dir, TEMPLATE.ram), shared: true },
        dataPort: true,
        forwardNic: true,
        stdinPort: true,
      }),
      disk: path.join(dir, TEMPLATE.disk),
      configDisk: path.join(dir, TEMPLATE.configDisk),
    };
    try {
      log(`making a warm-start template (${shape.cpus} CPU, ${shape.memoryMiB} MiB, ${shape.diskGiB} GiB, ${accel.accel})`);
      onStep('template', 'booting the warm-start template for this image (once per image and machine size)', 0.12);
      const keys = generateKeys(dir, 'template');
      writeConfigDisk(spec.configDisk, {
        version: 1,
        name: 'cove-template',
        hostname: 'cove-template',
        hostKey: keys.hostPrivate,
        authorizedKeys: [keys.clientPublic],
        // The 9p device exists (clones mount it after restore); the template never mounts it,
        // because QEMU 7.2 cannot save a VM with a mounted 9p share.
        mounts: [],
        network: DEFAULT_NETWORK,
        resizeRoot: true,
        insecureRegistries: [],
        // Each clone sets its own at rebirth; the template's only reaches what starts in its boot.
        aslr: guestAslr(accel.accel, driver.features.version),
      });
      await driver.create(spec, { file: path.join(imageDir, IMAGE.baseDisk), format: 'raw' }, shape.diskGiB * 1024 ** 3);
      await driver.start(spec);
      const consoleLog = path.join(run, VM.consoleLog);
      const stop = watchConsole(consoleLog, (step, message, fraction) => onStep(step, `template: ${message}`, 0.12 + 0.7 * fraction));
      try {
        await waitForConsole(consoleLog, /cove: ready/, this.deps.bootTimeoutMs, () => driver.pids(run).qemu !== null);
      } finally {
        stop();
      }
      const bootSeconds = (Date.now() - t0) / 1000;
      onStep('template-save', 'saving the warm-start template', 0.85);
      await driver.pause(run);
      const saved = await driver.save(run, path.join(dir, TEMPLATE.state), { skipSharedMemory: true });
      await driver.stop(run, { timeoutMs: 0 });
      // The disk is frozen from here on: clones' disks are overlays over it.
      fs.chmodSync(spec.disk, 0o444);
      for (const f of [VM.consoleLog, VM.qemuLog, VM.passtLog]) {
        try {
          fs.copyFileSync(path.join(run, f), path.join(dir, f));
        } catch {
          // Not every VM writes every log.
        }
      }
      const manifest: TemplateManifest = {
        version: 1,
        key,
        binding,
        createdAt: new Date().toISOString(),
        stateSha256: await sha256File(path.join(dir, TEMPLATE.state)),
        stateBytes: saved.bytes,
        bootSeconds,
        saveSeconds: saved.seconds,
      };
      writeJsonAtomic(path.join(dir, TEMPLATE.manifest), manifest);
      fs.renameSync(dir, final);
      fs.rmSync(run, { recursive: true, force: true });
      log(`ready in ${((Date.now() - t0) / 1000).toFixed(1)} s (boot ${bootSeconds.toFixed(1)} s, save ${saved.seconds.toFixed(2)} s, ${(saved.bytes / 1024).toFixed(0)} KiB of state)`);
      const t = this.open(imageDir, id);
      if (!t) throw new Error(`the template ${final} cannot be read back`);
      return t;
    } catch (e) {
      const tail = tailFile(path.join(run, VM.consoleLog), 5);
      await driver.stop(run, { timeoutMs: 0 }).catch(() => undefined);
      fs.rmSync(dir, { recursive: true, force: true });
      fs.rmSync(run, { recursive: true, force: true });
      const why = e instanceof Error ? e.message : String(e);
      log(`failed: ${why}${tail ? ` | console: ${tail.split('\n').slice(-3).join(' | ')}` : ''}`);
      throw new Error(`the warm-start template could not be made: ${why}`, { cause: e });
    }
  }

  /** Removes every template of an image that no sandbox uses and that is not the newest for its key. */
  prune(imageDir: string, used: Set<string>): string[] {
    const removed: string[] = [];
    let names: string[];
    try {
      names = fs.readdirSync(this.root(imageDir)).sort();
    } catch {
      return removed;
    }
    const newest = new Map<string, string>();
    for (const n of names) if (!n.endsWith('.tmp') && !fs.existsSync(path.join(this.root(imageDir), n, TEMPLATE.bad))) newest.set(n.split('-')[0], n);
    for (const n of names) {
      if (used.has(n) || newest.get(n.split('-')[0]) === n) continue;
      if (n.endsWith('.tmp') && this.making.size > 0) continue;
      fs.rmSync(path.join(this.root(imageDir), n), { recursive: true, force: true });
      removed.push(n);
    }
    return removed;
  }
}

/** Waits for a console line; fails early when the VM is gone. */
export async function waitForConsole(file: string, marker: RegExp, timeoutMs: number, alive: () => boolean): Promise<void> {
  const read = () => {
    try {
      return fs.readFileSync(file, 'utf8');
    } catch {
      return ''; // Not written yet.
    }
  };
  await waitFor(
    `the console line "${marker.source}"`,
    timeoutMs,
    () => {
      const text = read();
      if (marker.test(text)) return true;
      if (!alive()) throw new Error(`the VM exited before "${marker.source}" (console: ${text.trim().split('\n').slice(-2).join(' | ')})`);
      return false;
    },
    { intervalMs: 250, onError: 'throw' },
  );
}
