// coved's side of the image and the hypervisor driver: the few calls a sandbox makes, and the
// progress it reads off the guest console while a VM boots.
import * as child_process from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { DoctorCheck, ImageBuildResult, ImageInfo } from '../../contract/protocol';
import { buildImage as build, listImages as list, readManifest, verifyImage, type ImageInfo as StoredImage } from '../image';
import { CoveError } from '../../contract/errors';
import { ErrorCodes } from '../../contract/protocol';
import { IMAGE } from '../../contract/layout';
import { which } from '../image/tools';
import type { SandboxConfig } from './guest-config';
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

/** passt where it is installed (COVE_NETWORK=user forces qemu's slirp). */
export function networkFor(env: NodeJS.ProcessEnv = process.env): 'passt' | 'user' {
  if (env.COVE_NETWORK === 'user') return 'user';
  return driver.findPasst(env) ? 'passt' : 'user';
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
