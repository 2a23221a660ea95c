// The sandbox requests (sandbox/*): up, start, stop, sleep, pause, remove, publish, unpublish. Each
// validates its parameters, finds or makes the sandbox in the registry (coved.ts), and runs the
// operation in that sandbox's queue.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CoveError, conflict, invalidInput, messageOf } from '../../../contract/errors';
import { checkName, nameForFolder } from '../../../contract/names';
import { ErrorCodes, type ExtraMount, type PortForward, type SandboxInfo } from '../../../contract/protocol';
import { VM, vmDir, vmsDir } from '../../../contract/layout';
import { createOverlay } from '../../driver';
import type { Coved } from '../coved';
import { removeContext } from '../context';
import { generateKeys, writeSshConfig } from '../keys';
import { envSwitch } from '../env-parse';
import { networkFor } from '../host-checks';
import * as images from '../images';
import { checkMounts } from '../mounts';
import type { Sandbox, SandboxConfig } from '../sandbox';
import type { MachineShape, Template } from '../templates';
import { asParams, checkWorkspace, optBool, optEnum, optInt, optPorts, reqInt, type Params } from '../validate';

/** Whether new sandboxes start from a warm-start template (COVE_WARM=off turns it off). */
export const warmEnabled = (env: NodeJS.ProcessEnv = process.env) => envSwitch(env, 'COVE_WARM', true);

type SizeOptions = ReturnType<typeof sizeOptions>;

export function list(coved: Coved): SandboxInfo[] {
  return coved.all().map((s) => s.info()).sort((a, b) => a.name.localeCompare(b.name));
}

export function inspect(coved: Coved, raw: unknown): SandboxInfo {
  return coved.get(asParams(raw).name).info();
}

export async function up(coved: Coved, raw: unknown): Promise<SandboxInfo> {
  const p = asParams(raw);
  if (typeof p.dir !== 'string') throw invalidInput('"dir" is required and must be a string', 'pass the folder to open');
  const workspace = checkWorkspace(p.dir, coved.home);
  const opts = sizeOptions(p);
  let name: string;
  if (p.name !== undefined && p.name !== null) {
    name = checkName(p.name);
  } else {
    // A sandbox for this folder, made or being made, is the one: two `up` requests for the same
    // folder (the extension sends no name) must not make two sandboxes.
    const same = coved.all().find((s) => s.config.workspace === workspace);
    name = same ? same.name : (coved.creatingFor.get(workspace) ?? freeNameFor(coved, workspace));
  }
  let sb = (coved.has(name) ? coved.get(name) : undefined);
  if (sb && sb.config.workspace !== workspace) {
    throw conflict(`sandbox ${name} already exists for ${sb.config.workspace}`, `choose another --name, or remove it with \`cove rm ${name}\``);
  }
  const token = typeof p.progressToken === 'string' ? p.progressToken.slice(0, 200) : undefined;
  const mounts = p.mounts === undefined || p.mounts === null ? undefined : checkMounts(p.mounts, workspace, coved.home);
  if (!sb) sb = await create(coved, name, workspace, { ...opts, mounts }, token);
  else {
    // Settings given again for a sandbox that exists: keep-awake and the bind guard apply now, the
    // mounts on its next start (SandboxInfo.mountsNote says so while they differ).
    const c = sb.config;
    let changed = false;
    if (opts.keepAwake !== undefined && opts.keepAwake !== (c.keepAwake ?? false)) {
      c.keepAwake = opts.keepAwake;
      changed = true;
    }
    if (opts.bindGuard !== undefined && opts.bindGuard !== (c.bindGuard !== false)) {
      if (opts.bindGuard) delete c.bindGuard;
      else c.bindGuard = false;
      changed = true;
    }
    if (mounts && JSON.stringify(mounts) !== JSON.stringify(c.mounts ?? [])) {
      c.mounts = mounts;
      changed = true;
    }
    if (changed) sb.saveConfig();
  }
  const target = sb;
  await target.serialize(async () => {
    if (target.runtime.state === 'running') return;
    await target.start((step, message, fraction) => coved.progress({ subject: name, operation: 'up', step, message, fraction, token }));
  });
  return target.info();
}

function sizeOptions(p: Params) {
  const hostMiB = Math.floor(os.totalmem() / 1024 / 1024);
  return {
    cpus: optInt(p, 'cpus', 1, Math.max(1, os.cpus().length)),
    memoryMiB: optInt(p, 'memoryMiB', 512, hostMiB, ' MiB'),
    diskGiB: optInt(p, 'diskGiB', 4, 4096, ' GiB'),
    mount: optEnum(p, 'mount', ['virtiofs', '9p'] as const),
    readonly: optBool(p, 'readonly'),
    allowHostPorts: optPorts(p, 'allowHostPorts'),
    keepAwake: optBool(p, 'keepAwake'),
    bindGuard: optBool(p, 'bindGuard'),
  };
}

/** The folder's own name if free, else that name with a short hash of the path. */
function freeNameFor(coved: Coved, workspace: string): string {
  const base = nameForFolder(workspace);
  if (!coved.has(base) && !coved.creating.has(base)) return base;
  let h = 0;
  for (const c of workspace) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return `${base.slice(0, 33)}-${h.toString(16).padStart(6, '0').slice(0, 6)}`;
}

type CreateOptions = SizeOptions & { mounts?: ExtraMount[] };

function create(coved: Coved, name: string, workspace: string, opts: CreateOptions, token?: string): Promise<Sandbox> {
  const pending = coved.creating.get(name);
  if (pending) return pending;
  const made = createNow(coved, name, workspace, opts, token).finally(() => {
    coved.creating.delete(name);
    coved.creatingFor.delete(workspace);
  });
  coved.creating.set(name, made);
  coved.creatingFor.set(workspace, name);
  return made;
}

async function createNow(coved: Coved, name: string, workspace: string, opts: CreateOptions, token?: string): Promise<Sandbox> {
  const progress = (step: string, message: string, fraction?: number) => coved.progress({ subject: name, operation: 'up', step, message, fraction, token });
  progress('image', 'looking for the Docker tier image', 0);
  const image = (await coved.buildImage(false, name, false, token)).image;
  const cpus = opts.cpus ?? Math.min(2, os.cpus().length);
  const memoryMiB = opts.memoryMiB ?? 2048;
  const diskGiB = opts.diskGiB ?? 20;
  const warm = await templateFor(coved, image.dir, { cpus, memoryMiB, diskGiB, network: networkFor() }, opts.mount, progress);
  const dir = vmDir(name, coved.home);
  fs.mkdirSync(vmsDir(coved.home), { recursive: true, mode: 0o700 });
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
      ...(opts.bindGuard === false ? { bindGuard: false } : {}),
      ...(opts.mounts && opts.mounts.length > 0 ? { mounts: opts.mounts } : {}),
      image: path.basename(image.dir),
      baseSha256: images.baseSha256(image.dir),
      createdAt: new Date().toISOString(),
      published: [],
      allowHostPorts: opts.allowHostPorts ?? [],
    };
    generateKeys(dir, name);
    // coved's own entry file is the proxy; ELECTRON_RUN_AS_NODE lets an editor's runtime run it.
    const entry = require.main?.filename ?? path.join(__dirname, 'main.js');
    writeSshConfig(dir, name, `env ELECTRON_RUN_AS_NODE=1 COVE_HOME="${coved.home}" "${process.execPath}" "${entry}" ssh-proxy ${name}`);
    if (warm.template) await createOverlay(warm.template.file('disk'), path.join(dir, VM.disk), config.diskGiB * 1024 ** 3, 'qcow2');
    else await images.createDisk(image.dir, path.join(dir, VM.disk), config.diskGiB);
    const sb = coved.adopt(config);
    if (warm.note) sb.runtime.warmNote = warm.note;
    sb.saveConfig(); // Written last: its presence marks a complete sandbox.
    coved.add(sb);
    await sb.openSockets();
    await sb.ensureContext();
    coved.sandboxChanged(sb);
    return sb;
  } catch (e) {
    coved.delete(name);
    fs.rmSync(dir, { recursive: true, force: true });
    if ((e as NodeJS.ErrnoException).code === 'ENOSPC' || /no space left on device/i.test(messageOf(e))) {
      throw new CoveError(ErrorCodes.noSpace, `the disk holding ${coved.home} is full: sandbox ${name} was not created`, 'free some space and run `cove up` again');
    }
    throw e;
  }
}

/**
 * The warm-start template for a new sandbox of this shape, made now if there is none (the first
 * sandbox of a new image or shape waits for it, about as long as a cold boot); or null with a
 * one-line reason, and the sandbox boots cold.
 */
async function templateFor(
coved: Coved,
  imageDir: string,
  shape: MachineShape,
  mount: 'virtiofs' | '9p' | undefined,
  progress: (step: string, message: string, fraction?: number) => void,
): Promise<{ template: Template | null; note?: string }> {
  if (!warmEnabled()) return { template: null, note: 'warm start is off (COVE_WARM)' };
  const accel = await coved.accel(imageDir);
  const driver = coved.driver(accel.accel);
  if (!driver.features.snapshots) return { template: null, note: `${driver.features.name} cannot save VMs on this host` };
  if (mount === 'virtiofs' && driver.features.saveWithShare.virtiofs === 'never') {
    return { template: null, note: `virtio-fs was asked for, and ${driver.features.version} cannot save it: booting cold` };
  }
  try {
    return { template: await coved.templates.ensure(imageDir, driver, accel, shape, (step, message, fraction) => progress(step, message, fraction)) };
  } catch (e) {
    coved.log(`warm start unavailable: ${messageOf(e)}`);
    return { template: null, note: messageOf(e).split('\n')[0] };
  }
}

export async function start(coved: Coved, raw: unknown): Promise<SandboxInfo> {
  const sb = coved.get(asParams(raw).name);
  await sb.serialize(() => sb.start((step, message, fraction) => coved.progress({ subject: sb.name, operation: 'start', step, message, fraction })));
  return sb.info();
}

export async function stop(coved: Coved, raw: unknown): Promise<SandboxInfo> {
  const p = asParams(raw);
  const sb = coved.get(p.name);
  const force = optBool(p, 'force') ?? false;
  coved.progress({ subject: sb.name, operation: 'stop', step: 'stop', message: 'stopping the VM' });
  await sb.serialize(() => sb.stop(force));
  return sb.info();
}

export async function sleep(coved: Coved, raw: unknown): Promise<SandboxInfo> {
  const sb = coved.get(asParams(raw).name);
  await sb.serialize(() => sb.sleep());
  return sb.info();
}

export async function pause(coved: Coved, raw: unknown): Promise<SandboxInfo> {
  const sb = coved.get(asParams(raw).name);
  await sb.serialize(async () => {
    if (sb.runtime.state !== 'running') throw conflict(`sandbox ${sb.name} is ${sb.runtime.state}`, 'only a running sandbox can be paused');
    await sb.pause();
  });
  return sb.info();
}

export async function remove(coved: Coved, raw: unknown): Promise<void> {
  const p = asParams(raw);
  const sb = coved.get(p.name);
  const force = optBool(p, 'force') ?? false;
  await sb.serialize(async () => {
    const st = sb.runtime.state;
    if ((st === 'running' || st === 'starting' || st === 'stopping') && !force) {
      throw conflict(`sandbox ${sb.name} is ${st}`, `stop it first with \`cove stop ${sb.name}\`, or remove it anyway with \`cove rm --force ${sb.name}\``);
    }
    await sb.stop(force);
    await sb.closeSockets();
    if (coved.dockerBin) await removeContext(coved.dockerBin, sb.name);
    // Only the sandbox's own folder goes; the name was checked, so this is inside vms/.
    const dir = vmDir(sb.name, coved.home);
    if (path.dirname(dir) !== vmsDir(coved.home)) throw new Error(`refusing to remove ${dir}`);
    fs.rmSync(dir, { recursive: true, force: true });
    coved.delete(sb.name);
  });
  coved.sandboxRemoved(sb.name);
}

export async function publish(coved: Coved, raw: unknown): Promise<PortForward> {
  const p = asParams(raw);
  const sb = coved.get(p.name);
  const hostPort = reqInt(p, 'hostPort', 1, 65535);
  const guestPort = reqInt(p, 'guestPort', 1, 65535);
  return sb.publish(hostPort, guestPort);
}

export async function unpublish(coved: Coved, raw: unknown): Promise<void> {
  const p = asParams(raw);
  const sb = coved.get(p.name);
  await sb.unpublish(reqInt(p, 'hostPort', 1, 65535));
}
