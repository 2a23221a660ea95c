// coved's side of the image and the hypervisor driver: the few calls a sandbox makes, and the
// progress it reads off the guest console while a VM boots.
import * as child_process from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { DoctorCheck, ImageBuildResult, ImageInfo, MountType } from '../../contract/protocol';
import { buildImage as build, listImages as list, readManifest, verifyImage, type ImageInfo as StoredImage } from '../image';
import { CoveError } from '../../contract/errors';
import { ErrorCodes } from '../../contract/protocol';
import { IMAGE } from '../../contract/layout';
import { which } from '../image/tools';
import type { SandboxKeys } from './keys';
import type { Sandbox, SandboxConfig } from './sandbox';
import * as driver from '../driver';

export type AccelResult = driver.AccelResult;

function toInfo(img: StoredImage): ImageInfo {
  const m = img.manifest;
  const versions: Record<string, string> = {};
  for (const [k, v] of Object.entries(m.versions)) if (v) versions[k] = v;
  const sizes: Record<string, number> = {};
  for (const [k, f] of Object.entries(m.files)) sizes[k] = f.size;
  return { tier: m.tier, hash: m.hash, dir: img.dir, builtAt: m.builtAt, versions, sizes };
}

export async function buildImage(home: string, force: boolean, fullVerify: boolean, onStep: (step: string, message: string, fraction: number) => void): Promise<ImageBuildResult> {
  const t0 = Date.now();
  const r = await build({ home, force, fullVerify, onProgress: (step, fraction, message) => onStep(step, message, fraction) });
  return { image: toInfo({ dir: r.dir, manifest: r.manifest }), cached: r.cached, seconds: (Date.now() - t0) / 1000 };
}

export function listImages(home: string): ImageInfo[] {
  return list(home).map(toInfo);
}

/** The base disk's recorded checksum (from the manifest), or undefined. */
export function baseSha256(imageDir: string): string | undefined {
  return readManifest(imageDir)?.files[IMAGE.baseDisk]?.sha256;
}

/**
 * Refuses to boot a sandbox over a damaged image, or over a base disk other than the one its
 * overlay was made on (an image rebuilt in place after damage): either would corrupt its disk.
 */
export async function checkImageFor(imageDir: string, config: SandboxConfig): Promise<void> {
  const v = await verifyImage(imageDir);
  const again = `rebuild it with \`cove image build\`; sandbox ${config.name} was made over it and cannot start until then`;
  if (!v.ok) throw new CoveError(ErrorCodes.conflict, `the image ${config.image} is damaged: ${v.problems.join('; ')}`, again);
  const now = baseSha256(imageDir);
  if (config.baseSha256 && now && now !== config.baseSha256) {
    throw new CoveError(
      ErrorCodes.conflict,
      `the image ${config.image} was rebuilt after sandbox ${config.name} was made over it, so its disk no longer fits`,
      `copy out what you need (the workspace folder is safe on the host), then \`cove rm ${config.name}\` and \`cove up\` again`,
    );
  }
}

export function detectAccel(home: string, imageDir: string, log: (m: string) => void): Promise<AccelResult> {
  return driver.detectAccel({ home, imageDir, log });
}

export async function createDisk(imageDir: string, diskPath: string, sizeGiB: number): Promise<void> {
  await driver.createOverlay(path.join(imageDir, IMAGE.baseDisk), diskPath, sizeGiB * 1024 ** 3);
}

/** virtio-fs needs a virtiofsd, and the C virtiofsd needs root for its namespace sandbox. */
function virtiofsAvailable(): boolean {
  return driver.findVirtiofsd() !== null && process.getuid?.() === 0;
}

export interface BootRequest {
  sandbox: Sandbox;
  imageDir: string;
  accel: AccelResult;
  keys: SandboxKeys;
  log: (m: string) => void;
}

/** Writes the config disk and starts virtiofsd (when used) and qemu; both outlive coved. */
/** passt where it is installed (COVE_NETWORK=user forces qemu's slirp). */
export function networkFor(env: NodeJS.ProcessEnv = process.env): 'passt' | 'user' {
  if (env.COVE_NETWORK === 'user') return 'user';
  return driver.findPasst(env) ? 'passt' : 'user';
}

export async function boot(req: BootRequest): Promise<{ qemu: number; virtiofsd: number | null; passt: number | null; mount: MountType; network: 'passt' | 'user' }> {
  const sb = req.sandbox;
  const c = sb.config;
  let mount: MountType = c.mount;
  if (mount === 'virtiofs' && !virtiofsAvailable()) {
    req.log('virtio-fs is not available on this host (no virtiofsd, or not root); using 9p');
    mount = '9p';
  }
  if (mount === 'virtiofs' && c.readonly) {
    // The C virtiofsd cannot refuse writes; qemu's 9p server can (readonly=on), so a read-only
    // folder is enforced on the host side, where the guest cannot undo it.
    req.log('read-only folder: using 9p, whose read-only mode the host enforces');
    mount = '9p';
  }
  const network = networkFor();
  if (network === 'user') req.log('passt is not installed: using qemu user networking, which lets the guest reach the host loopback');
  driver.writeConfigDisk(sb.file('configDisk'), {
    version: 1,
    name: c.name,
    hostname: c.name,
    hostKey: req.keys.hostPrivate,
    authorizedKeys: [req.keys.clientPublic],
    mounts: [{ tag: 'cove-ws', type: mount, path: c.workspace, readonly: c.readonly }],
    network: { address: '10.0.2.15/24', gateway: '10.0.2.2', dns: '10.0.2.3' },
    resizeRoot: true,
    insecureRegistries: [],
  });
  const pids = await driver.startQemu({
    imageDir: req.imageDir,
    vmDir: sb.dir,
    cpus: c.cpus,
    memoryMiB: c.memoryMiB,
    accel: req.accel.accel,
    tscKhz: req.accel.tscKhz,
    mount: { type: mount, hostPath: c.workspace, readonly: c.readonly },
    network,
  });
  return { qemu: pids.qemu, virtiofsd: pids.virtiofsd, passt: pids.passt, mount, network };
}

export function quit(qmpSock: string): Promise<void> {
  return driver.qmpQuit(qmpSock);
}

/** The console markers of docs/guest.md, as boot steps with a rough share of the boot. */
const MARKERS: Array<[RegExp, string, string, number]> = [
  [/Linux version/, 'kernel', 'the guest kernel is starting', 0.05],
  [/cove: initramfs start/, 'initramfs', 'finding the root disk', 0.1],
  [/cove: root mounted/, 'root', 'root file system mounted', 0.15],
  [/cove: init start/, 'init', 'the guest init is running', 0.2],
  [/cove: modules loaded/, 'modules', 'kernel modules loaded', 0.3],
  [/cove: workspace mounted/, 'workspace', 'the folder is mounted in the guest', 0.35],
  [/cove: service cove-agent started|cove: service agent started/, 'agent', 'the agent is starting', 0.4],
  [/cove: service containerd started/, 'containerd', 'containerd is starting', 0.45],
  [/cove: service dockerd started/, 'dockerd', 'dockerd is starting', 0.55],
  [/cove: ready/, 'ready', 'dockerd answers', 0.95],
];

/** Reads the console log as it grows and reports each boot step once; returns a stop function. */
export function watchConsole(file: string, onStep: (step: string, message: string, fraction: number) => void): () => void {
  let pos = 0;
  let next = 0;
  let carry = '';
  const timer = setInterval(() => {
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch {
      return;
    }
    try {
      const size = fs.fstatSync(fd).size;
      if (size <= pos) return;
      const buf = Buffer.alloc(Math.min(size - pos, 1 << 20));
      fs.readSync(fd, buf, 0, buf.length, pos);
      pos += buf.length;
      carry = (carry + buf.toString('utf8')).slice(-8192);
      for (let i = next; i < MARKERS.length; i++) {
        const [re, step, message, fraction] = MARKERS[i];
        if (re.test(carry)) {
          next = i + 1;
          onStep(step, message, fraction);
        }
      }
    } finally {
      fs.closeSync(fd);
    }
  }, 250);
  return () => clearInterval(timer);
}

export async function hostChecks(home: string): Promise<DoctorCheck[]> {
  const checks: DoctorCheck[] = [];
  const tool = (name: string, find: () => string | null, hint: string, optional = '') => {
    let found: string | null = null;
    let problem = 'not found';
    try {
      found = find();
    } catch (e) {
      problem = e instanceof Error ? e.message : String(e);
    }
    checks.push({ name, ok: found !== null, detail: found ?? problem + optional, hint });
  };
  tool('qemu', () => driver.findQemu(), 'apt-get install qemu-system-x86');
  tool('qemu-img', () => driver.findQemuImg(), 'apt-get install qemu-utils');
  tool('virtiofsd', () => driver.findVirtiofsd(), 'apt-get install qemu-system-common (QEMU 7.2) or virtiofsd', '; 9p is used for the shared folder');
  const passt = driver.findPasst();
  checks.push({
    name: 'passt',
    ok: passt !== null,
    detail: passt ? `${passt}: the guest cannot reach services on the host's 127.0.0.1` : "not found: qemu's user networking is used, and the guest can reach services on the host's 127.0.0.1",
    hint: 'apt-get install passt',
  });
  checks.push({
    name: 'virtio-fs usable',
    ok: virtiofsAvailable(),
    detail: virtiofsAvailable() ? 'yes' : 'no: the C virtiofsd needs root here; shared folders use 9p',
    hint: 'run coved as root or install the Rust virtiofsd, or use --mount 9p',
  });
  try {
    fs.accessSync(home, fs.constants.W_OK);
    checks.push({ name: 'COVE_HOME', ok: true, detail: home });
  } catch {
    checks.push({ name: 'COVE_HOME', ok: false, detail: `${home} is not writable`, hint: 'point COVE_HOME at a writable folder' });
  }
  const ssh = which('ssh');
  checks.push({
    name: 'ssh client',
    ok: ssh !== null,
    detail: ssh ?? 'not found (only needed to use OpenSSH with `cove ssh-config`)',
    hint: 'apt-get install openssh-client',
  });
  return checks;
}

/** Whether the host docker CLI has compose and buildx; the guest's own are offered otherwise. */
export async function pluginChecks(dockerBin: string): Promise<DoctorCheck[]> {
  const has = (args: string[]) =>
    new Promise<string | null>((resolve) =>
      child_process.execFile(dockerBin, args, { timeout: 10_000 }, (err, stdout) => resolve(err ? null : String(stdout).trim().split('\n')[0])),
    );
  const out: DoctorCheck[] = [];
  for (const [plugin, args] of [
    ['compose', ['compose', 'version']],
    ['buildx', ['buildx', 'version']],
  ] as const) {
    const v = await has([...args]);
    out.push({
      name: `docker ${plugin} plugin`,
      ok: v !== null,
      detail: v ?? 'not installed on the host',
      hint: `run it in the sandbox instead: \`cove exec NAME -- docker ${plugin} …\`, or copy the guest's plugin: \`cove cp NAME:/usr/libexec/docker/cli-plugins/docker-${plugin} ~/.docker/cli-plugins/\``,
    });
  }
  return out;
}
