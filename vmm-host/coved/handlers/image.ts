// The image requests (image/*): build (shared with `up`, through the registry), list, and prune —
// which also removes the templates of pruned images, and old templates no sandbox is made over.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { conflict } from '../../../contract/errors';
import type { ImageBuildResult, ImageInfo } from '../../../contract/protocol';
import type { Coved } from '../coved';
import * as images from '../images';

export function build(coved: Coved, force: boolean, token?: string): Promise<ImageBuildResult> {
  return coved.buildImage(force, 'image', true, token);
}

export function list(coved: Coved): ImageInfo[] {
  return images.listImages(coved.home);
}

/** Removes every image no sandbox uses, keeping the newest one (what the next `up` uses). */
export function prune(coved: Coved): string[] {
  if (coved.imageBuilding) throw conflict('an image build is running', 'prune again when it has finished');
  const sandboxes = coved.all();
  const used = new Set(sandboxes.map((s) => s.config.image));
  const removed: string[] = [];
  const all = list(coved);
  for (const img of all.slice(1)) {
    if (used.has(path.basename(img.dir))) continue;
    fs.rmSync(img.dir, { recursive: true, force: true });
    removed.push(img.dir);
  }
  // Kept images: templates no sandbox is made over, other than the newest of each shape.
  for (const img of all.filter((i) => !removed.includes(i.dir))) {
    const usedTemplates = new Set(sandboxes.flatMap((s) => (s.config.image === path.basename(img.dir) && s.config.template ? [s.config.template] : [])));
    for (const t of coved.templates.prune(img.dir, usedTemplates)) removed.push(path.join(img.dir, 'templates', t));
  }
  return removed;
}
