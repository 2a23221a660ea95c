// Where the guest kernel comes from. The build asks a KernelSource for a bzImage, its config and
// its module tree; it does not care how they were obtained. Today: Debian's generic kernel package
// from the recipe's suite (`debian-package`). A kernel built by Cove itself (with the drivers built
// in, no initramfs needed) slots in as another source (`directory`) — see kernel/README.md.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { run } from './exec';
import { BuildStepError } from './errors';
import type { KernelSourceSpec } from './recipe';

export interface KernelArtifacts {
  /** `uname -r` of the kernel, the name of its folder under /lib/modules. */
  release: string;
  /** The package version (or the directory source's stated version). */
  version: string;
  /** The bootable bzImage (vmlinuz). */
  bzImage: string;
  /** The kernel configuration text file. */
  config: string;
  /** `lib/modules/<release>` of the kernel (may lack modules.dep; the build runs depmod). */
  modulesDir: string;
  /** Human description of where it came from. */
  origin: string;
}

export interface KernelContext {
  /** $COVE_HOME/cache */
  cacheDir: string;
  logFile: string | null;
  /** Refetch even when cached. */
  force: boolean;
}

export interface KernelSource {
  readonly kind: string;
  obtain(ctx: KernelContext): Promise<KernelArtifacts>;
}

export function kernelSourceFor(spec: KernelSourceSpec, suite: string, mirror: string): KernelSource {
  switch (spec.source) {
    case 'debian-package':
      return new DebianPackageKernel(mirror, suite, spec.package ?? 'linux-image-amd64');
    case 'directory':
      if (!spec.path) throw new Error('recipe kernel.source "directory" needs kernel.path');
      return new DirectoryKernel(spec.path);
  }
}

/**
 * Debian's generic kernel: resolves the metapackage (linux-image-amd64) to the versioned package
 * with a private apt state (nothing on the host changes), downloads it and unpacks it into
 * $COVE_HOME/cache/kernel-<key>/.
 */
export class DebianPackageKernel implements KernelSource {
  readonly kind = 'debian-package';
  constructor(
    readonly mirror: string,
    readonly suite: string,
    readonly pkg: string,
  ) {}

  async obtain(ctx: KernelContext): Promise<KernelArtifacts> {
    const key = createHash('sha256').update(`${this.mirror}\0${this.suite}\0${this.pkg}`).digest('hex').slice(0, 16);
    const dir = path.join(ctx.cacheDir, `kernel-${key}`);
    const info = path.join(dir, 'kernel.json');
    if (!ctx.force && fs.existsSync(info)) return JSON.parse(fs.readFileSync(info, 'utf8')) as KernelArtifacts;

    const tmp = fs.mkdtempSync(path.join(ctx.cacheDir, '.tmp-kernel-'));
    const apt = path.join(tmp, 'apt');
    for (const d of ['state/lists/partial', 'cache/archives/partial']) fs.mkdirSync(path.join(apt, d), { recursive: true });
    fs.writeFileSync(path.join(apt, 'status'), '');
    fs.writeFileSync(
      path.join(apt, 'sources.list'),
      `deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${this.mirror} ${this.suite} main\n`,
    );
    const o = [
      `Dir::Etc::SourceList=${apt}/sources.list`,
      'Dir::Etc::SourceParts=/dev/null',
      `Dir::State=${apt}/state`,
      `Dir::State::status=${apt}/status`,
      `Dir::Cache=${apt}/cache`,
      'APT::Sandbox::User=root',
      'Debug::NoLocking=1',
      'APT::Architecture=amd64',
    ].flatMap((x) => ['-o', x]);
    const common = { step: 'kernel', logFile: ctx.logFile, spaceDir: ctx.cacheDir };
    await run('apt-get', [...o, '-q', 'update'], { ...common, timeoutMs: 300_000 });
    const deps = await run('apt-cache', [...o, 'depends', '--no-recommends', '--no-suggests', this.pkg], {
      ...common,
      timeoutMs: 60_000,
      capture: true,
    });
    const m = /Depends:\s*(linux-image-\S+)/.exec(deps.stdout);
    if (!m) throw new BuildStepError('kernel', `cannot resolve ${this.pkg} to a kernel package in ${this.suite}`, ctx.logFile);
    const versioned = m[1];
    await run('apt-get', [...o, '-q', 'download', versioned], { ...common, cwd: tmp, timeoutMs: 900_000 });
    const deb = fs.readdirSync(tmp).find((f) => f.endsWith('.deb'));
    if (!deb) throw new BuildStepError('kernel', `apt-get download ${versioned} produced no .deb`, ctx.logFile);
    const version = decodeURIComponent(deb.split('_')[1] ?? 'unknown');
    const x = path.join(tmp, 'x');
    await run('dpkg-deb', ['-x', path.join(tmp, deb), x], { ...common, timeoutMs: 300_000 });
    fs.rmSync(path.join(tmp, deb));
    fs.rmSync(apt, { recursive: true, force: true });

    const boot = path.join(x, 'boot');
    const vmlinuz = fs.readdirSync(boot).find((f) => f.startsWith('vmlinuz-'));
    if (!vmlinuz) throw new BuildStepError('kernel', `${versioned} has no /boot/vmlinuz-*`, ctx.logFile);
    const release = vmlinuz.slice('vmlinuz-'.length);
    const modRoot = fs.existsSync(path.join(x, 'usr/lib/modules', release)) ? 'usr/lib/modules' : 'lib/modules';
    const artifacts = (base: string): KernelArtifacts => ({
      release,
      version,
      bzImage: path.join(base, 'x/boot', vmlinuz),
      config: path.join(base, 'x/boot', `config-${release}`),
      modulesDir: path.join(base, 'x', modRoot, release),
      origin: `Debian ${this.suite} ${versioned} ${version}`,
    });
    fs.writeFileSync(path.join(tmp, 'kernel.json'), JSON.stringify(artifacts(dir), null, 2));
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(tmp, dir);
    return artifacts(dir);
  }
}

/**
 * A kernel built elsewhere (for example a Cove kernel with virtio and ext4 built in): a folder with
 * `bzImage` (or `vmlinuz`), `config`, optionally `version`, and `lib/modules/<release>/`.
 */
export class DirectoryKernel implements KernelSource {
  readonly kind = 'directory';
  constructor(readonly dir: string) {}
  async obtain(): Promise<KernelArtifacts> {
    const bz = ['bzImage', 'vmlinuz'].map((f) => path.join(this.dir, f)).find((f) => fs.existsSync(f));
    if (!bz) throw new BuildStepError('kernel', `${this.dir} has no bzImage or vmlinuz`, null);
    const mods = path.join(this.dir, 'lib/modules');
    const releases = fs.existsSync(mods) ? fs.readdirSync(mods) : [];
    const release = releases[0] ?? 'unknown';
    const vfile = path.join(this.dir, 'version');
    return {
      release,
      version: fs.existsSync(vfile) ? fs.readFileSync(vfile, 'utf8').trim() : release,
      bzImage: bz,
      config: path.join(this.dir, 'config'),
      modulesDir: path.join(mods, release),
      origin: `directory ${this.dir}`,
    };
  }
}

const MAGICS: { name: 'xz' | 'zstd'; bytes: Buffer; cmd: string[] }[] = [
  { name: 'xz', bytes: Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), cmd: ['xz', '-d', '-c', '--single-stream'] },
  { name: 'zstd', bytes: Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), cmd: ['zstd', '-d', '-c', '-q'] },
];

/**
 * Cuts the compressed payload out of a bzImage: the boot header's payload_offset/payload_length
 * when they are sane, else the first xz (FD 37 7A 58 5A 00) or zstd magic. The last 4 bytes of
 * the payload are the appended uncompressed size, not part of the stream.
 */
export function findPayload(bz: Buffer): { codec: 'xz' | 'zstd'; start: number; end: number } | null {
  if (bz.length > 0x250 && bz.readUInt32LE(0x202) === 0x53726448 /* "HdrS" */) {
    const setupSects = bz[0x1f1] || 4;
    const off = bz.readUInt32LE(0x248);
    const len = bz.readUInt32LE(0x24c);
    const start = (setupSects + 1) * 512 + off;
    if (len > 4 && start + len <= bz.length) {
      for (const m of MAGICS) {
        if (bz.subarray(start, start + m.bytes.length).equals(m.bytes)) return { codec: m.name, start, end: start + len - 4 };
      }
    }
  }
  for (const m of MAGICS) {
    const i = bz.indexOf(m.bytes);
    if (i >= 0) return { codec: m.name, start: i, end: bz.length };
  }
  return null;
}

/**
 * Writes the uncompressed ELF kernel (bootable through its PVH note) to `out`; returns 'elf', or
 * 'bzimage' after copying the bzImage itself when no payload could be cut out and decompressed.
 */
export async function extractVmlinux(
  bzImage: string,
  out: string,
  opts: { logFile: string | null; spaceDir: string },
): Promise<'elf' | 'bzimage'> {
  const bz = fs.readFileSync(bzImage);
  const p = findPayload(bz);
  if (p) {
    const codec = MAGICS.find((m) => m.name === p.codec);
    if (!codec) throw new Error(`no decompressor for a ${p.codec} kernel payload`);
    const payload = path.join(path.dirname(out), '.payload');
    fs.writeFileSync(payload, bz.subarray(p.start, p.end));
    try {
      const fd = fs.openSync(out, 'w');
      try {
        await new Promise<void>((resolve, reject) => {
          const child = spawn(codec.cmd[0], [...codec.cmd.slice(1), payload], {
            stdio: ['ignore', fd, 'ignore'],
          });
          child.on('error', reject);
          child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${codec.cmd[0]} exited ${code}`))));
        });
      } finally {
        fs.closeSync(fd);
      }
      const head = Buffer.alloc(4);
      const rfd = fs.openSync(out, 'r');
      fs.readSync(rfd, head, 0, 4, 0);
      fs.closeSync(rfd);
      if (head.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]))) return 'elf';
    } catch (e) {
      if (opts.logFile) fs.appendFileSync(opts.logFile, `vmlinux extraction failed: ${(e as Error).message}\n`);
    } finally {
      fs.rmSync(payload, { force: true });
    }
  }
  fs.copyFileSync(bzImage, out);
  return 'bzimage';
}
