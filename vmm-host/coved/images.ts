// Plain functions over images: build, list, checksums, the checks before a sandbox boots over one,
// a sandbox's disk, and the KVM probe that runs with an image's kernel.
import * as path from 'node:path';
import type { ImageBuildResult, ImageInfo } from '../../contract/protocol';
import { buildImage as build, listImages as list, readManifest, verifyImage, type ImageInfo as StoredImage } from '../image';
import { CoveError } from '../../contract/errors';
import { ErrorCodes } from '../../contract/protocol';
import { IMAGE } from '../../contract/layout';
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

