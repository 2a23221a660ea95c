// The image manifest (written last: its presence marks a complete image), and reading images back:
// listing, choosing the newest, verifying sizes and checksums.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { IMAGE, imagesDir } from '../../contract/layout';
import { ImageCorruptError } from './errors';

export interface ManifestFile {
  size: number;
  sha256: string;
}

export interface ImageManifest {
  schema: 1;
  tier: string;
  /** The recipe hash (docs/guest.md); also the suffix of the image folder's name. */
  hash: string;
  builtAt: string;
  buildSeconds: number;
  suite: string;
  kernel: { release: string; version: string; origin: string; format: 'elf' | 'bzimage' };
  versions: {
    kernel: string;
    docker: string | null;
    containerd: string | null;
    runc: string | null;
    buildx: string | null;
    compose: string | null;
    node: string | null;
  };
  /** Bytes the root file system holds, and the base disk's virtual size. */
  rootfsBytes: number;
  initramfsModules: string[];
  files: Record<string, ManifestFile>;
}

export interface ImageInfo {
  dir: string;
  manifest: ImageManifest;
}

/** Package → version from a dpkg status file (installed packages only). */
export function dpkgVersions(statusText: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const stanza of statusText.split(/\n\n+/)) {
    const pkg = /^Package: (.+)$/m.exec(stanza)?.[1];
    const ver = /^Version: (.+)$/m.exec(stanza)?.[1];
    const status = /^Status: (.+)$/m.exec(stanza)?.[1] ?? '';
    if (pkg && ver && status.endsWith(' installed')) out.set(pkg.trim(), ver.trim());
  }
  return out;
}

export async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  await new Promise<void>((resolve, reject) => {
    fs.createReadStream(file, { highWaterMark: 4 << 20 })
      .on('data', (b) => h.update(b))
      .on('end', () => resolve())
      .on('error', reject);
  });
  return h.digest('hex');
}

export function readManifest(dir: string): ImageManifest | null {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, IMAGE.manifest), 'utf8')) as ImageManifest;
  } catch {
    return null;
  }
}

/** Complete images (those with a manifest), newest first. Temp and incomplete folders are skipped. */
export function listImages(home: string): ImageInfo[] {
  const root = imagesDir(home);
  let names: string[];
  try {
    names = fs.readdirSync(root);
  } catch {
    return [];
  }
  const out: ImageInfo[] = [];
  for (const n of names) {
    if (n.startsWith('.')) continue;
    const dir = path.join(root, n);
    const manifest = readManifest(dir);
    if (manifest) out.push({ dir, manifest });
  }
  return out.sort((a, b) => b.manifest.builtAt.localeCompare(a.manifest.builtAt));
}

/** The newest complete image of a tier, or null. */
export function latestImage(home: string, tier = 'docker'): ImageInfo | null {
  return listImages(home).find((i) => i.manifest.tier === tier) ?? null;
}

export interface VerifyResult {
  ok: boolean;
  problems: string[];
}

/**
 * Checks an image against its manifest: every file present with its recorded size (always), and
 * its sha256 (when `full`; reading the base disk takes a few seconds). A truncated disk fails.
 */
export async function verifyImage(dir: string, opts: { full?: boolean } = {}): Promise<VerifyResult> {
  const manifest = readManifest(dir);
  if (!manifest) return { ok: false, problems: [`${IMAGE.manifest} missing or unreadable`] };
  const problems: string[] = [];
  for (const name of [IMAGE.kernel, IMAGE.kernelConfig, IMAGE.initrd, IMAGE.baseDisk]) {
    if (!(name in manifest.files)) problems.push(`${name} not in the manifest`);
  }
  for (const [name, want] of Object.entries(manifest.files)) {
    const file = path.join(dir, name);
    let size: number;
    try {
      size = fs.statSync(file).size;
    } catch {
      problems.push(`${name} missing`);
      continue;
    }
    if (size !== want.size) {
      problems.push(`${name} is ${size} bytes, the manifest says ${want.size}`);
      continue;
    }
    if (opts.full && (await sha256File(file)) !== want.sha256) problems.push(`${name} checksum mismatch`);
  }
  return { ok: problems.length === 0, problems };
}

/** verifyImage that throws an ImageCorruptError. */
export async function assertImageOk(dir: string, opts: { full?: boolean } = {}): Promise<void> {
  const r = await verifyImage(dir, opts);
  if (!r.ok) throw new ImageCorruptError(dir, r.problems);
}
