// The image pipeline: debootstrap (cached on its own) → kernel → rootfs → modules → initramfs →
// disk → manifest. Builds into images/.tmp-*, renames into place only when complete (manifest
// written last), under a lock so that concurrent builds wait and then use the cache.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { HOME, IMAGE, coveHome, imageDir, imagesDir } from '../../contract/layout';
import { checkKernelConfig, describeMissing, loadFeatures } from '../../kernel/check';
import {
  AgentBundleMissingError,
  DiskFullError,
  ImageError,
  KernelFeatureError,
  MirrorError,
  isImageError,
} from './errors';
import { run, rethrowNoSpace } from './exec';
import { buildInitramfs } from './initramfs';
import { extractVmlinux, kernelSourceFor, type KernelArtifacts } from './kernel-source';
import { acquireLock, pidAlive } from './lock';
import { ImageManifest, dpkgVersions, readManifest, sha256File, verifyImage } from './manifest';
import { checkMirrorReachable, findDebianMirror } from './mirror';
import { copyModuleTree } from './modules';
import { Recipe, debootstrapKey, findRepoRoot, loadRecipe, recipeHash, recipePaths } from './recipe';
import { freeBytes, requireFreeSpace } from './space';
import { BuildStepName, ProgressFn, overallFraction } from './steps';
import { requireBuildTools } from './tools';

export interface BuildImageOptions {
  /** $COVE_HOME; default from the environment. */
  home?: string;
  /** The agent bundle to embed; default `<repo>/out/bundle/agent.js`. */
  agentBundle?: string;
  onProgress?: ProgressFn;
  /** Rebuild even if an image with this hash exists (the debootstrap and kernel caches too). */
  force?: boolean;
  /** Check a cached image's checksums, not only its sizes (a few seconds). */
  fullVerify?: boolean;
  /** The repository holding tier-docker/ and kernel/; default: found from this file. */
  repoRoot?: string;
  env?: NodeJS.ProcessEnv;
}

export interface BuildImageResult {
  dir: string;
  manifest: ImageManifest;
  /** True when an existing image was used and nothing was built. */
  cached: boolean;
}

const GiB = 1024 ** 3;
const LOCK_WAIT_MS = 60 * 60 * 1000;
const MIRROR_TROUBLE =
  /Failed getting release file|Couldn't download|Temporary failure resolving|Could not resolve|Connection refused|Connection timed out|Unable to connect|Failed to fetch|Network is unreachable|No route to host/i;

/** The folder of the image the current sources would produce (built or not). */
export function expectedImageDir(opts: { home?: string; agentBundle?: string; repoRoot?: string } = {}): string {
  const root = opts.repoRoot ?? findRepoRoot();
  const paths = recipePaths(root);
  const agent = opts.agentBundle ?? path.join(root, 'out', 'bundle', 'agent.js');
  if (!fs.existsSync(agent)) throw new AgentBundleMissingError(agent);
  const recipe = loadRecipe(paths);
  return imageDir(recipe.tier, recipeHash(paths, agent), opts.home ?? coveHome());
}

export async function buildImage(opts: BuildImageOptions = {}): Promise<BuildImageResult> {
  const env = opts.env ?? process.env;
  const home = opts.home ?? coveHome(env);
  const root = opts.repoRoot ?? findRepoRoot();
  const paths = recipePaths(root);
  const agent = opts.agentBundle ?? path.join(root, 'out', 'bundle', 'agent.js');
  const progress: ProgressFn = opts.onProgress ?? (() => undefined);
  if (!fs.existsSync(agent)) throw new AgentBundleMissingError(agent);

  const recipe = loadRecipe(paths);
  const hash = recipeHash(paths, agent);
  const finalDir = imageDir(recipe.tier, hash, home);

  const cachedResult = async (): Promise<BuildImageResult | null> => {
    if (opts.force) return null;
    const manifest = readManifest(finalDir);
    if (!manifest) return null;
    const check = await verifyImage(finalDir, { full: opts.fullVerify });
    if (!check.ok) {
      progress('cached', 0, `the cached image ${path.basename(finalDir)} is damaged (${check.problems.join('; ')}); rebuilding it`);
      return null;
    }
    progress('cached', 1, `using the cached image ${path.basename(finalDir)}`);
    return { dir: finalDir, manifest, cached: true };
  };
  const early = await cachedResult();
  if (early) return early;

  const tools = requireBuildTools();
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new ImageError(
      'building the guest image needs root (debootstrap and chroot)',
      'run the build as root (sudo), or use an image built elsewhere',
    );
  }
  const imagesRoot = imagesDir(home);
  const cacheDir = path.join(home, HOME.cache);
  for (const d of [imagesRoot, cacheDir, path.join(home, HOME.locks)]) fs.mkdirSync(d, { recursive: true });

  const lock = await acquireLock(path.join(home, HOME.locks, 'image-build.lock'), {
    timeoutMs: LOCK_WAIT_MS,
    onWait: (pid) => progress('lock', 0, `waiting for another image build${pid ? ` (pid ${pid})` : ''} to finish`),
  });
  try {
    const again = await cachedResult();
    if (again) return again;
    cleanStaleTemps(imagesRoot);
    cleanStaleTemps(cacheDir);
    return await buildLocked({ home, root, paths, recipe, hash, finalDir, agent, cacheDir, imagesRoot, tools, progress, env, force: !!opts.force });
  } finally {
    lock.release();
  }
}

/** Removes `.tmp-*` folders left by killed or failed builds (we hold the lock: none is live). */
function cleanStaleTemps(dir: string): void {
  for (const n of fs.readdirSync(dir)) {
    if (!n.startsWith('.tmp-')) continue;
    const pid = Number.parseInt(n.split('-')[2] ?? '', 10);
    if (pid && pid !== process.pid && pidAlive(pid) && n.startsWith('.tmp-build-')) continue;
    fs.rmSync(path.join(dir, n), { recursive: true, force: true });
  }
}

interface Ctx {
  home: string;
  root: string;
  paths: ReturnType<typeof recipePaths>;
  recipe: Recipe;
  hash: string;
  finalDir: string;
  agent: string;
  cacheDir: string;
  imagesRoot: string;
  tools: Record<string, string>;
  progress: ProgressFn;
  env: NodeJS.ProcessEnv;
  force: boolean;
}

async function buildLocked(c: Ctx): Promise<BuildImageResult> {
  const t0 = Date.now();
  const tmp = fs.mkdtempSync(path.join(c.imagesRoot, `.tmp-build-${process.pid}-`));
  const log = path.join(tmp, IMAGE.buildLog);
  const stepSeconds: Record<string, number> = {};
  let stepStart = Date.now();
  let current: BuildStepName = 'debootstrap';
  const begin = (step: BuildStepName, message: string) => {
    stepSeconds[current] = (Date.now() - stepStart) / 1000;
    current = step;
    stepStart = Date.now();
    fs.appendFileSync(log, `\n=== ${step}: ${message} (${new Date().toISOString()})\n`);
    c.progress(step, overallFraction(step, 0), message);
  };
  const cmd = (step: string, timeoutMs: number) => ({ step, logFile: log, timeoutMs, spaceDir: c.home });

  try {
    const mirror = findDebianMirror(c.env);
    const dbKey = debootstrapKey(c.recipe, mirror);
    const dbDir = path.join(c.cacheDir, `debootstrap-${dbKey}`);
    const dbRootfs = path.join(dbDir, 'rootfs');
    const dbCached = !c.force && fs.existsSync(path.join(dbDir, 'complete.json'));

    // Up-front space estimate: debootstrap ~0.9 GiB, kernel ~0.4 GiB, stage ~0.9 GiB, disk ~0.8 GiB.
    const need = (dbCached ? 0 : 1 * GiB) + 0.5 * GiB + 2 * GiB;
    requireFreeSpace(c.home, need);

    begin('debootstrap', dbCached ? 'debootstrap cached' : `debootstrap ${c.recipe.suite} with ${c.recipe.packages.length} packages`);
    if (!dbCached) {
      await checkMirrorReachable(mirror, c.recipe.suite);
      const dbTmp = fs.mkdtempSync(path.join(c.cacheDir, `.tmp-debootstrap-${process.pid}-`));
      try {
        await run(
          c.tools.debootstrap,
          [`--variant=${c.recipe.variant}`, `--include=${c.recipe.packages.join(',')}`, c.recipe.suite, path.join(dbTmp, 'rootfs'), mirror],
          cmd('debootstrap', 30 * 60 * 1000),
        );
      } catch (e) {
        const out = (e as { output?: string }).output ?? '';
        if (MIRROR_TROUBLE.test(out)) {
          throw new MirrorError(`debootstrap could not download from ${mirror}: ${out.split('\n').filter(Boolean).slice(-1)[0] ?? ''}`, mirror, undefined, { cause: e });
        }
        throw e;
      }
      // The package archives and indexes are not needed in the image.
      for (const d of ['var/cache/apt/archives', 'var/lib/apt/lists']) {
        const p = path.join(dbTmp, 'rootfs', d);
        for (const f of fs.readdirSync(p)) if (f !== 'partial' && f !== 'lock') fs.rmSync(path.join(p, f), { recursive: true, force: true });
      }
      fs.writeFileSync(path.join(dbTmp, 'complete.json'), JSON.stringify({ suite: c.recipe.suite, packages: c.recipe.packages, builtAt: new Date().toISOString(), seconds: (Date.now() - stepStart) / 1000 }, null, 2));
      fs.rmSync(dbDir, { recursive: true, force: true });
      fs.renameSync(dbTmp, dbDir);
    }

    begin('kernel', 'fetching the guest kernel');
    const source = kernelSourceFor(c.recipe.kernel, c.recipe.suite, mirror);
    let kernel: KernelArtifacts;
    try {
      kernel = await source.obtain({ cacheDir: c.cacheDir, logFile: log, force: c.force });
    } catch (e) {
      const out = (e as { output?: string }).output ?? '';
      if (MIRROR_TROUBLE.test(out)) throw new MirrorError(`cannot download the kernel package from ${mirror}`, mirror, undefined, { cause: e });
      throw e;
    }
    const configText = fs.readFileSync(kernel.config, 'utf8');
    const check = checkKernelConfig(configText, loadFeatures(c.paths.features));
    if (check.missing.length > 0) {
      fs.appendFileSync(log, describeMissing(check.missing).join('\n') + '\n');
      throw new KernelFeatureError(check.missing.map((f) => f.name));
    }
    fs.writeFileSync(path.join(tmp, IMAGE.kernelConfig), configText);
    const format = await extractVmlinux(kernel.bzImage, path.join(tmp, IMAGE.kernel), { logFile: log, spaceDir: c.home });
    fs.appendFileSync(log, `kernel ${kernel.release} (${kernel.origin}) as ${format}\n`);

    begin('rootfs', 'assembling the root file system');
    const rootfs = path.join(tmp, 'rootfs');
    await run('cp', ['-a', '--reflink=auto', dbRootfs, rootfs], cmd('rootfs', 10 * 60 * 1000));
    // tar, not cp: /sbin, /lib… are symlinks into /usr in trixie and must stay symlinks.
    await run(
      'sh',
      ['-c', 'tar -C "$1" --owner=0 --group=0 -cf - . | tar -C "$2" --keep-directory-symlink -xpf -', 'overlay', c.paths.rootfs, rootfs],
      cmd('rootfs', 60_000),
    );
    fs.mkdirSync(path.join(rootfs, 'opt/cove'), { recursive: true });
    fs.copyFileSync(c.agent, path.join(rootfs, 'opt/cove/agent.js'));
    // dockerd on this kernel uses the x_tables (legacy) iptables; nft would need more modules.
    for (const [name, target] of [['iptables', 'iptables-legacy'], ['ip6tables', 'ip6tables-legacy']]) {
      await run('chroot', [rootfs, 'update-alternatives', '--set', name, `/usr/sbin/${target}`], cmd('rootfs', 60_000));
    }
    for (const d of ['usr/share/doc', 'usr/share/man', 'usr/share/info', 'var/log/apt', 'var/cache/debconf']) {
      const p = path.join(rootfs, d);
      if (fs.existsSync(p)) for (const f of fs.readdirSync(p)) fs.rmSync(path.join(p, f), { recursive: true, force: true });
    }
    fs.writeFileSync(path.join(rootfs, 'etc/hostname'), 'cove\n');
    fs.writeFileSync(path.join(rootfs, 'etc/fstab'), '# The root file system is mounted by the initramfs; see /sbin/cove-init.\n');
    fs.writeFileSync(path.join(rootfs, 'etc/machine-id'), '');
    fs.writeFileSync(path.join(rootfs, 'etc/cove/image.json'), JSON.stringify({ hash: c.hash, kernel: kernel.release }) + '\n');

    begin('modules', `installing modules of ${kernel.release}`);
    const modDir = path.join(rootfs, 'usr/lib/modules', kernel.release);
    const copied = copyModuleTree(kernel.modulesDir, modDir, c.recipe.moduleExcludeDirs);
    fs.appendFileSync(log, `copied ${copied.files} module files, ${copied.bytes} bytes\n`);
    await run('chroot', [rootfs, 'depmod', '-a', kernel.release], cmd('modules', 5 * 60 * 1000));

    begin('initramfs', 'building the initramfs');
    const initrd = buildInitramfs({
      initramfsDir: c.paths.initramfs,
      busybox: c.tools.busybox,
      modulesDir: modDir,
      modules: c.recipe.initramfsModules,
    });
    fs.writeFileSync(path.join(tmp, IMAGE.initrd), initrd.image);

    // Read what the manifest needs from the rootfs before it is packed and removed.
    const versions = dpkgVersions(fs.readFileSync(path.join(rootfs, 'var/lib/dpkg/status'), 'utf8'));
    // The engine's own CLI plugins, for a host docker CLI without them (`cove up` installs them).
    const pluginFiles: string[] = [];
    fs.mkdirSync(path.join(tmp, IMAGE.cliPlugins));
    for (const name of c.recipe.cliPlugins.names) {
      const from = path.join(rootfs, c.recipe.cliPlugins.dir, name);
      if (!fs.existsSync(from)) throw new ImageError(`the image has no ${name} at ${c.recipe.cliPlugins.dir}`, 'check the packages of tier-docker/recipe.json');
      fs.copyFileSync(from, path.join(tmp, IMAGE.cliPlugins, name));
      fs.chmodSync(path.join(tmp, IMAGE.cliPlugins, name), 0o555);
      pluginFiles.push(`${IMAGE.cliPlugins}/${name}`);
    }

    begin('disk', 'writing the base disk');
    const du = await run('du', ['-s', '-B1', '-x', rootfs], { ...cmd('disk', 5 * 60 * 1000), capture: true });
    const rootfsBytes = Number.parseInt(du.stdout.split(/\s+/)[0] ?? '0', 10);
    const MiB = 1024 * 1024;
    const size = Math.max(c.recipe.disk.minBytes, Math.ceil((rootfsBytes * (1 + c.recipe.disk.headroomPercent / 100)) / MiB) * MiB);
    requireFreeSpace(c.home, rootfsBytes + 256 * MiB);
    const disk = path.join(tmp, IMAGE.baseDisk);
    fs.closeSync(fs.openSync(disk, 'w'));
    fs.truncateSync(disk, size);
    await run(
      tools(c, 'mkfs.ext4'),
      ['-F', '-q', '-t', 'ext4', '-L', 'cove-root', '-m', '0', '-E', 'lazy_itable_init=1,lazy_journal_init=1', '-d', rootfs, disk],
      cmd('disk', 10 * 60 * 1000),
    );
    fs.chmodSync(disk, 0o444);
    fs.rmSync(rootfs, { recursive: true, force: true });

    begin('manifest', 'checksumming');
    const files: ImageManifest['files'] = {};
    for (const name of [IMAGE.kernel, IMAGE.kernelConfig, IMAGE.initrd, IMAGE.baseDisk, ...pluginFiles]) {
      const p = path.join(tmp, name);
      files[name] = { size: fs.statSync(p).size, sha256: await sha256File(p) };
    }
    stepSeconds[current] = (Date.now() - stepStart) / 1000;
    const manifest: ImageManifest & { stepSeconds: Record<string, number> } = {
      schema: 1,
      tier: c.recipe.tier,
      hash: c.hash,
      builtAt: new Date().toISOString(),
      buildSeconds: (Date.now() - t0) / 1000,
      suite: c.recipe.suite,
      kernel: { release: kernel.release, version: kernel.version, origin: kernel.origin, format },
      versions: {
        kernel: kernel.release,
        docker: versions.get('docker.io') ?? null,
        containerd: versions.get('containerd') ?? null,
        runc: versions.get('runc') ?? null,
        buildx: versions.get('docker-buildx') ?? null,
        compose: versions.get('docker-compose') ?? null,
        node: versions.get('nodejs') ?? null,
      },
      rootfsBytes,
      initramfsModules: initrd.modules,
      files,
      stepSeconds,
    };
    fs.writeFileSync(path.join(tmp, IMAGE.manifest), JSON.stringify(manifest, null, 2) + '\n');
    if (fs.existsSync(c.finalDir)) {
      // An incomplete or forced-over image: move it aside first so the rename is atomic.
      const old = path.join(c.imagesRoot, `.tmp-old-${process.pid}-${Date.now()}`);
      fs.renameSync(c.finalDir, old);
      makeWritable(old);
      fs.rmSync(old, { recursive: true, force: true });
    }
    fs.chmodSync(tmp, 0o755);
    fs.renameSync(tmp, c.finalDir);
    c.progress('manifest', 1, `image ${path.basename(c.finalDir)} ready`);
    return { dir: c.finalDir, manifest, cached: false };
  } catch (e) {
    // Keep only the log of a failed build; the next build removes it with the other temp folders.
    try {
      for (const f of fs.readdirSync(tmp)) if (f !== IMAGE.buildLog) fs.rmSync(path.join(tmp, f), { recursive: true, force: true });
      // A build that failed before it logged anything leaves nothing behind at all.
      if (fs.readdirSync(tmp).length === 0) fs.rmdirSync(tmp);
    } catch {
      // Best effort.
    }
    if ((e as NodeJS.ErrnoException | null)?.code === 'ENOSPC') rethrowNoSpace(e, c.home);
    if (e instanceof DiskFullError && e.neededBytes === 0) throw new DiskFullError(e.dir, freeBytes(e.dir), 3 * GiB, { cause: e });
    if (isImageError(e)) throw e;
    throw new ImageError(`image build failed in step ${current}: ${(e as Error).message}`, `see ${log}`, { cause: e });
  }
}

function tools(c: Ctx, name: string): string {
  return c.tools[name] ?? name;
}

function makeWritable(dir: string): void {
  for (const f of fs.readdirSync(dir)) {
    try {
      fs.chmodSync(path.join(dir, f), 0o644);
    } catch {
      // Best effort.
    }
  }
}
