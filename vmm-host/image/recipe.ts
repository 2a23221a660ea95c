// The recipe (tier-docker/recipe.json) and the image hash of docs/guest.md: sha256 over the recipe,
// every file under tier-docker/rootfs/ and tier-docker/initramfs/, kernel/features.json and the
// agent bundle (each with its relative path and mode, so a chmod or a rename counts too).
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface KernelSourceSpec {
  /** `debian-package`: Debian's generic kernel from the suite; `directory`: a kernel built elsewhere. */
  source: 'debian-package' | 'directory';
  package?: string;
  path?: string;
}

export interface Recipe {
  tier: string;
  suite: string;
  variant: string;
  packages: string[];
  /** Docker CLI plugins copied out of the image for hosts whose docker CLI lacks them. */
  cliPlugins: { dir: string; names: string[] };
  kernel: KernelSourceSpec;
  initramfsModules: string[];
  moduleExcludeDirs: string[];
  disk: { headroomPercent: number; minBytes: number };
}

/** Where the repository's image inputs are. */
export interface RecipePaths {
  root: string;
  recipe: string;
  rootfs: string;
  initramfs: string;
  features: string;
}

/** Finds the repository root (the folder holding tier-docker/recipe.json) from this file upward. */
export function findRepoRoot(start = __dirname): string {
  let d = start;
  for (;;) {
    if (fs.existsSync(path.join(d, 'tier-docker', 'recipe.json'))) return d;
    const up = path.dirname(d);
    if (up === d) throw new Error(`tier-docker/recipe.json not found above ${start}`);
    d = up;
  }
}

export function recipePaths(root = findRepoRoot()): RecipePaths {
  return {
    root,
    recipe: path.join(root, 'tier-docker', 'recipe.json'),
    rootfs: path.join(root, 'tier-docker', 'rootfs'),
    initramfs: path.join(root, 'tier-docker', 'initramfs'),
    features: path.join(root, 'kernel', 'features.json'),
  };
}

export function loadRecipe(paths: RecipePaths): Recipe {
  return JSON.parse(fs.readFileSync(paths.recipe, 'utf8')) as Recipe;
}

/** Files under `dir`, relative, sorted; symlinks are listed (by target), not followed. */
export function listFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const ent of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${ent.name}` : ent.name;
      if (ent.isDirectory()) walk(r);
      else out.push(r);
    }
  };
  if (fs.existsSync(dir)) walk('');
  return out.sort();
}

export function recipeHash(paths: RecipePaths, agentBundle: string): string {
  const h = createHash('sha256');
  const add = (label: string, file: string) => {
    const st = fs.lstatSync(file);
    const body = st.isSymbolicLink() ? Buffer.from(`-> ${fs.readlinkSync(file)}`) : fs.readFileSync(file);
    h.update(`${label}\0${(st.mode & 0o7777).toString(8)}\0${body.length}\0`);
    h.update(body);
  };
  add('recipe.json', paths.recipe);
  for (const f of listFiles(paths.rootfs)) add(`rootfs/${f}`, path.join(paths.rootfs, f));
  for (const f of listFiles(paths.initramfs)) add(`initramfs/${f}`, path.join(paths.initramfs, f));
  add('features.json', paths.features);
  h.update(`agent\0${fs.readFileSync(agentBundle).length}\0`);
  h.update(fs.readFileSync(agentBundle));
  return h.digest('hex').slice(0, 16);
}

/** The debootstrap cache key: suite, variant, packages and mirror only. */
export function debootstrapKey(recipe: Recipe, mirror: string): string {
  const h = createHash('sha256');
  h.update(JSON.stringify({ suite: recipe.suite, variant: recipe.variant, packages: [...recipe.packages].sort(), mirror }));
  return h.digest('hex').slice(0, 16);
}
